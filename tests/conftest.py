"""Shared fixtures: a tiny prepared task suite and a tiny model trained on it for a few seconds."""

import importlib.util
from pathlib import Path

import pytest
import torch

from forgelib.data.batching import encode_rows
from forgelib.data.config import PrepareConfig
from forgelib.data.prepare import prepare
from forgelib.data.tasks import load_tasks
from forgelib.models.build import build_llama, llama_config
from forgelib.models.hf import load_tokenizer, save_model
from forgelib.base.sft import SFTSettings, train_sft


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """A test that runs a `forge` command in-process sets torch's thread count (the command's
    stage default): put it back, so later tests compute with the count they started with."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """copy + reverse at level 1: learnable in a few hundred steps by a 1-layer model."""
    out = tmp_path_factory.mktemp("data") / "data"
    cfg = PrepareConfig(tasks=("copy", "reverse"), default_level=1, n_train=600, n_val=40, n_test=40)
    prepare(cfg, out)
    return out


@pytest.fixture(scope="session")
def two_family_data(tmp_path_factory) -> Path:
    """copy (string) and parity (logic) at level 1: a specialist has one other family to keep or stay silent on."""
    out = tmp_path_factory.mktemp("data2") / "data"
    prepare(PrepareConfig(tasks=("copy", "parity"), default_level=1, n_train=200, n_val=20, n_test=20), out)
    return out


@pytest.fixture(scope="session")
def tiny_trained(tiny_data, tmp_path_factory):
    """(model_dir, history): a 1-layer Llama trained 150 steps on the tiny suite."""
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(tiny_data / "tokenizer")
    config = llama_config(vocab_size=len(tokenizer), hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                          max_position_embeddings=32)
    model = build_llama(config, seed=0)
    tasks = load_tasks(tiny_data)
    rows = [r for t in tasks.values() for r in t["train"]]
    history = train_sft(model, encode_rows(tokenizer, rows), SFTSettings(steps=150, lr=1e-2, batch_size=64, log_every=10),
                        pad_id=tokenizer.pad_token_id)
    out = tmp_path_factory.mktemp("models") / "tiny"
    save_model(model, tokenizer, out, {"name": "tiny", "parents": [], "params": {"steps": 150}})
    return out, history


@pytest.fixture(scope="session")
def load_bench():
    """Import a script of bench/ by name (bench/ is not a package): ``load_bench("grokfast")``."""

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
