"""Bad ``train:`` params raise ForgeError naming the key (the CLI maps it to exit 2)."""

from __future__ import annotations

import pytest

from forgelib.configtools import from_dict
from forgelib.errors import ForgeError
from forgelib.train.config import TrainConfig


def test_defaults_are_valid_and_everything_is_off():
    cfg = from_dict(TrainConfig, {}, "train")
    assert cfg == TrainConfig()
    assert not any(getattr(cfg, s).enabled for s in ("grokfast", "edge", "geometry", "self_model", "dreams", "temperature"))
    assert cfg.grokfast.effective_lamb() == 2.0
    assert from_dict(TrainConfig, {"grokfast": {"filter": "ma"}}, "train").grokfast.effective_lamb() == 5.0


def test_lists_become_tuples():
    cfg = from_dict(TrainConfig, {"edge": {"band": [0.5, 0.8]}, "geometry": {"layers": [1, -1]}}, "train")
    assert cfg.edge.band == (0.5, 0.8) and cfg.geometry.layers == (1, -1)


@pytest.mark.parametrize("params, message", [
    ({"grokfast": {"alpha": 1.5}}, "train.grokfast.alpha: expected a float in (0, 1), got 1.5"),
    ({"grokfast": {"alpha": 0}}, "train.grokfast.alpha"),
    ({"grokfast": {"filter": "fft"}}, "train.grokfast.filter"),
    ({"grokfast": {"lamb": -1}}, "train.grokfast.lamb"),
    ({"grokfast": {"schedule": {"gap_low": 0.5, "gap_high": 0.2}}}, "train.grokfast.schedule.gap_low"),
    ({"edge": {"band": [0.8, 0.5]}}, "train.edge.band"),
    ({"edge": {"band": [0.5]}}, "train.edge.band"),
    ({"edge": {"min_samples": 100}}, "train.edge.min_samples"),
    ({"geometry": {"layers": []}}, "train.geometry.layers"),
    ({"self_model": {"weight": -0.1}}, "train.self_model.weight"),
    ({"dreams": {"self_fraction": 1.5}}, "train.dreams.self_fraction"),
    ({"temperature": {"start": -1}}, "train.temperature.start"),
    ({"wandb": {"mode": "cloud"}}, "train.wandb.mode"),
    ({"batch_size": 0}, "train.batch_size"),
    ({"lr": "fast"}, "train.lr"),
    ({"source": "web"}, "train.source"),
    ({"edge": {"enabled": "yes"}}, "train.edge.enabled: expected true or false"),
    ({"grokfast": {"alpah": 0.9}}, "train.grokfast.alpah: unknown key"),
    ({"edge": 3}, "train.edge: expected a mapping"),
])
def test_bad_params_name_the_key(params, message):
    with pytest.raises(ForgeError) as info:
        from_dict(TrainConfig, params, "train")
    assert message in str(info.value)


def test_cli_switches():
    cfg = from_dict(TrainConfig, {"edge": {"band": [0.5, 0.9]}}, "train").with_enabled("edge", "dreams")
    assert cfg.edge.enabled and cfg.dreams.enabled and not cfg.grokfast.enabled
    assert cfg.edge.band == (0.5, 0.9)
    every = TrainConfig().with_enabled("all")
    assert all(getattr(every, n).enabled for n in ("grokfast", "edge", "geometry", "self_model", "dreams", "temperature"))
    assert TrainConfig().with_wandb("proj").wandb.project == "proj"
    assert TrainConfig().with_wandb(None) == TrainConfig()
    with pytest.raises(ForgeError, match="valid: grokfast"):
        TrainConfig().with_enabled("telepathy")
