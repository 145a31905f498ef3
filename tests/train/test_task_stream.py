"""Training batches: a pure function of (seed, step, levels); generated data never leaks held-out prompts."""

from __future__ import annotations

import pytest

from forgelib.configtools import from_dict
from forgelib.errors import ForgeError
from forgelib.train.config import TrainConfig
from forgelib.train.controllers.registry import BuildEnv, build_controllers
from forgelib.train.task_stream import TaskStream

from conftest import tiny_model


@pytest.mark.parametrize("source", ["split", "generate"])
def test_batches_depend_only_on_seed_step_and_levels(tasks, tokenizer, source):
    a, b = TaskStream(tasks, tokenizer, seed=3, source=source), TaskStream(tasks, tokenizer, seed=3, source=source)
    b.sample(0, 8)  # drawing other batches first changes nothing
    assert a.sample(5, 16) == b.sample(5, 16)
    assert a.sample(5, 16) != a.sample(6, 16)
    assert a.sample(5, 16) != a.sample(5, 16, salt="dream")


def test_split_source_honours_levels(tasks, tokenizer):
    stream = TaskStream(tasks, tokenizer, seed=0, source="split")
    assert stream.level_range("modular") == (1, 2)
    rows = stream.sample(0, 64, {"modular": 2, "string": 1, "logic": 1})
    assert {(r["family"], r["level"]) for r in rows} == {("modular", 2), ("string", 1), ("logic", 1)}


def test_generate_source_reaches_every_level_and_excludes_held_out(tasks, tokenizer):
    stream = TaskStream(tasks, tokenizer, seed=0, source="generate")
    assert stream.level_range("modular") == (1, 4)
    held_out = {r["prompt"] for s in ("validation", "test") for r in tasks["mod_add"][s]}
    rows = [r for step in range(20) for r in stream.sample(step, 32, {"modular": 1, "string": 3, "logic": 1})]
    assert {r["level"] for r in rows if r["family"] == "string"} == {3}
    assert not held_out & {r["prompt"] for r in rows if r["task"] == "mod_add"}
    without = stream.sample(0, 64)  # no curriculum: the split's own levels
    assert {r["level"] for r in without} <= {1, 2}


def test_edge_on_a_single_level_split_is_an_error(tasks, tokenizer):
    single = {name: splits.filter(lambda r: r["level"] == 1) for name, splits in tasks.items()}
    cfg = from_dict(TrainConfig, {"source": "split", "edge": {"enabled": True}}, "train")
    stream = TaskStream(single, tokenizer, seed=0, source="split")
    with pytest.raises(ForgeError, match="train.source"):
        build_controllers(cfg, BuildEnv(model=tiny_model(tokenizer), tasks=single, stream=stream, max_new_tokens=4))
    assert from_dict(TrainConfig, {"edge": {"enabled": True}}, "train").effective_source() == "generate"
    assert TrainConfig().effective_source() == "split"


def test_task_weights_set_how_often_each_task_is_drawn(tasks, tokenizer):
    names = sorted(tasks)
    weighted = TaskStream(tasks, tokenizer, seed=0, source="split", weights={"mod_add": 4.0})
    rows = [r for step in range(40) for r in weighted.sample(step, 64)]
    share = sum(r["task"] == "mod_add" for r in rows) / len(rows)
    expected = 4 / (4 + len(names) - 1)  # 2/3 with the fixture's three tasks
    assert abs(share - expected) < 0.04, (share, expected)
    uniform = [r for step in range(40) for r in TaskStream(tasks, tokenizer, seed=0).sample(step, 64)]
    assert abs(sum(r["task"] == "mod_add" for r in uniform) / len(uniform) - 1 / len(names)) < 0.04
    assert weighted.sample(7, 32) == TaskStream(tasks, tokenizer, seed=0, weights={"mod_add": 4.0}).sample(7, 32)


def test_task_weights_name_prepared_tasks_and_are_positive(tasks, tokenizer):
    with pytest.raises(ForgeError, match="train.task_weights: 'mod_pow' is not a prepared task"):
        TaskStream(tasks, tokenizer, seed=0, weights={"mod_pow": 2.0})
    with pytest.raises(ForgeError, match="task_weights.mod_add"):
        from_dict(TrainConfig, {"task_weights": {"mod_add": 0.0}}, "train")
