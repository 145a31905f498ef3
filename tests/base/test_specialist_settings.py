"""Per-specialist steps and lr (base.specialists.NAME.steps / .lr) over the shared base.specialist run.

Their bad values are in tests/test_config.py."""

import json

import torch

from forgelib.base.build import build_specialist
from forgelib.base.config import BaseConfig, SpecialistConfig, TrainSettings
from forgelib.models.build import build_llama, llama_config
from forgelib.models.card import read_card
from forgelib.models.hf import load_tokenizer, save_model


def test_overrides_replace_only_what_they_name():
    shared = TrainSettings(steps=1000, lr=2e-3, batch_size=128, weight_decay=0.0, warmup_steps=20)
    assert SpecialistConfig("logic").settings(shared) == shared
    own = SpecialistConfig("logic", steps=3000, lr=None).settings(shared)
    assert (own.steps, own.lr, own.batch_size, own.warmup_steps) == (3000, 2e-3, 128, 20)


def test_specialist_trains_for_its_own_steps_at_its_own_rate(two_family_data, tmp_path):
    torch.set_num_threads(1)
    data = two_family_data
    tokenizer = load_tokenizer(data / "tokenizer")
    config = llama_config(vocab_size=len(tokenizer), hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                          max_position_embeddings=32)
    save_model(build_llama(config, seed=0), tokenizer, tmp_path / "ancestor", {"name": "tiny-ancestor"})
    cfg = BaseConfig(
        specialist=TrainSettings(steps=4, lr=1e-3, batch_size=8, warmup_steps=1),
        specialists={"string": SpecialistConfig("string", replay_fraction=0.5),
                     "logic": SpecialistConfig("logic", replay_fraction=0.5, steps=9, lr=5e-3)},
    )
    for name, steps, lr in (("string", 4, 1e-3), ("logic", 9, 5e-3)):
        out = build_specialist(name, cfg, data, tmp_path / "ancestor", tmp_path / name, tmp_path / f"{name}_metrics")
        assert read_card(out)["params"]["train"] == {"steps": steps, "lr": lr, "batch_size": 8,
                                                    "weight_decay": 0.0, "warmup_steps": 1}
        assert json.loads((tmp_path / f"{name}_metrics" / "metrics.json").read_text())["step"] == steps
