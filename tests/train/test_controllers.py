"""Controllers in isolation: scripted inputs, hand-computed expectations, state round trips."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch.testing import assert_close

from forgelib.configtools import from_dict
from forgelib.errors import ForgeError
from forgelib.train.checkpoint import join_tensors, split_tensors
from forgelib.train.config import TrainConfig
from forgelib.train.controllers.base import BatchPlan
from forgelib.train.controllers.dream import DreamCycles, verified
from forgelib.train.controllers.edge import EdgeCurriculum, next_level
from forgelib.train.controllers.grokfast import GrokfastController
from forgelib.train.controllers.lamb_scheduler import LambScheduler, next_lamb
from forgelib.train.controllers.registry import CONTROLLERS, BuildEnv, build_controllers, get_builder
from forgelib.train.controllers.self_model import SelfModelHead, masked_mse
from forgelib.train.controllers.temperature import temperature_at
from forgelib.train.forge_loop import make_optimizer
from forgelib.train.task_stream import TaskStream

from conftest import tiny_model


def edge(**kw):
    args = dict(level_ranges={"easy": (1, 4), "hard": (1, 4), "fine": (1, 4)}, band=(0.55, 0.75),
                window=20, min_samples=10, update_every=5, start_level=2)
    return EdgeCurriculum(**{**args, **kw})


def feed(ctrl, step, outcomes: dict[str, list[bool]]):
    rows = [{"family": fam} for fam, oks in outcomes.items() for _ in oks]
    correct = torch.tensor([ok for oks in outcomes.values() for ok in oks])
    ctrl.on_step_end(None, step, rows, SimpleNamespace(correct=correct))


def test_next_level_rule():
    band = (0.55, 0.75)
    assert next_level(2, 0.9, band=band, lowest=1, highest=4) == 3
    assert next_level(2, 0.3, band=band, lowest=1, highest=4) == 1
    assert next_level(2, 0.6, band=band, lowest=1, highest=4) == 2
    assert next_level(4, 1.0, band=band, lowest=1, highest=4) == 4
    assert next_level(1, 0.0, band=band, lowest=1, highest=4) == 1


def test_edge_moves_difficulty_toward_the_band_on_scripted_success():
    ctrl = edge()
    for step in range(5):  # 5 steps x 4 outcomes per family = 20 outcomes; decision at step 4
        feed(ctrl, step, {"easy": [True] * 4, "hard": [False] * 4, "fine": [True, True, True, False][:4]})
    assert ctrl.levels == {"easy": 3, "hard": 1, "fine": 2}  # fine: 0.75 is inside the band
    assert len(ctrl.recent["easy"]) == 0 and len(ctrl.recent["fine"]) == 20  # a move clears the window
    plan = BatchPlan()
    ctrl.on_batch(None, 5, plan)
    assert plan.levels == {"easy": 3, "hard": 1, "fine": 2}
    for step in range(5, 10):  # still too easy at level 3 -> 4, then capped at the top level
        feed(ctrl, step, {"easy": [True] * 4})
    for step in range(10, 15):
        feed(ctrl, step, {"easy": [True] * 4})
    assert ctrl.levels["easy"] == 4


def test_edge_waits_for_min_samples():
    ctrl = edge(update_every=1)
    feed(ctrl, 0, {"easy": [True] * 9})
    assert ctrl.levels["easy"] == 2
    feed(ctrl, 1, {"easy": [True]})
    assert ctrl.levels["easy"] == 3


def test_lamb_rule():
    rule = dict(gap_high=0.2, gap_low=0.05, factor=2.0, lamb_min=0.5, lamb_max=5.0)
    assert next_lamb(2.0, 0.5, **rule) == 4.0
    assert next_lamb(4.0, 0.5, **rule) == 5.0
    assert next_lamb(2.0, 0.0, **rule) == 1.0
    assert next_lamb(0.6, 0.0, **rule) == 0.5
    assert next_lamb(2.0, 0.1, **rule) == 2.0


def test_grokfast_controller_is_the_one_owner_of_lamb():
    # The config gives λ's first value only: the optimizer takes the controller's, the scheduler
    # changes the controller's, and the fused optimizer's copy follows it before the next step.
    cfg = from_dict(TrainConfig, {"grokfast": {"enabled": True, "filter": "ema_fused", "lamb": 3.0}}, "train")
    grokfast = GrokfastController(filter="ema_fused", alpha=0.9, lamb=2.0, window_size=1, warmup=False)
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(cfg, model, [grokfast])
    assert optimizer.param_groups[0]["lamb"] == 2.0
    ctx = SimpleNamespace(model=model, optimizer=optimizer, controllers={"grokfast": grokfast})
    scheduler = LambScheduler(gap_high=0.2, gap_low=0.05, factor=2.0, lamb_min=0.5, lamb_max=5.0)
    scheduler.on_eval(ctx, 10, {"train_acc": 1.0, "val_acc": 0.5})
    assert grokfast.lamb == 4.0 and grokfast.state_dict()["lamb"] == 4.0 and scheduler.state_dict() == {"last_gap": 0.5}
    assert optimizer.param_groups[0]["lamb"] == 2.0
    grokfast.after_backward(ctx, 11)
    assert optimizer.param_groups[0]["lamb"] == 4.0


def test_temperature_schedule_goes_narrow_to_wide():
    values = [temperature_at(s, start=0.3, end=1.0, ramp_steps=10) for s in (0, 5, 10, 20)]
    assert values == pytest.approx([0.3, 0.65, 1.0, 1.0])


def test_masked_mse_hand_computed():
    predicted = torch.tensor([[[1.0, 1.0], [9.0, 9.0]]])
    target = torch.tensor([[[0.0, 2.0], [0.0, 0.0]]])
    assert_close(masked_mse(predicted, target, torch.tensor([[1, 0]])), torch.tensor(1.0))


def test_self_model_gradient_reaches_the_model(tokenizer):
    model = tiny_model(tokenizer)
    head = SelfModelHead(hidden_size=32, weight=1.0, source_layer=2, target_layer=1, seed=0)
    ids = torch.tensor([[1, 5, 6, 7]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    outputs = model(**batch, output_hidden_states=True)
    head.aux_loss(None, batch, outputs).backward()
    first_layer = model.model.layers[0].mlp.down_proj.weight.grad
    assert first_layer is not None and first_layer.abs().sum() > 0  # the target side is trained too
    assert head.head.weight.grad.abs().sum() > 0


def test_dream_buffer_keeps_the_hardest_unique_examples():
    dreams = DreamCycles(every=100, steps=1, buffer_size=2, batch_size=4, self_fraction=0.0, self_prompts=0,
                         temperature=0.5, max_new_tokens=4, seed=0)
    row = lambda p: {"task": "t", "family": "f", "level": 1, "prompt": p, "answer": "x"}
    dreams.add([row("a"), row("b"), row("c")], [0.5, 2.0, 1.0])
    assert [r["prompt"] for r in dreams.buffer] == ["b", "c"]
    dreams.add([row("b"), row("d")], [0.1, 3.0])  # b's latest loss is low: it drops out
    assert [(r["prompt"], r["loss"]) for r in dreams.buffer] == [("d", 3.0), ("c", 1.0)]


def test_self_samples_are_checked_by_the_task_verifier():
    row = {"task": "mod_add", "prompt": "3+5%7=", "answer": "1"}
    assert verified(row, "1") and not verified(row, "8")
    assert verified({"task": "not-registered", "prompt": "q", "answer": "42"}, "42")


def test_unknown_controller_lists_valid_names():
    with pytest.raises(ForgeError, match="valid controllers: temperature, edge, grokfast"):
        get_builder("telepathy")


def _all_on(tasks, tokenizer, **extra):
    params = ({name: {"enabled": True} for name, _ in CONTROLLERS if name != "lamb_schedule"}
              | {"grokfast": {"enabled": True, "filter": "ma", "window_size": 3, "schedule": {"enabled": True}},
                 "geometry": {"enabled": True, "probe_size": 16}, **extra})
    cfg = from_dict(TrainConfig, params, "train")
    model = tiny_model(tokenizer)
    stream = TaskStream(tasks, tokenizer, seed=0)
    return cfg, build_controllers(cfg, BuildEnv(model=model, tasks=tasks, stream=stream, max_new_tokens=6))


def test_registry_builds_every_controller_in_hook_order(tasks, tokenizer):
    assert build_controllers(TrainConfig(), BuildEnv(model=None, tasks=tasks, stream=None, max_new_tokens=1)) == []
    _, controllers = _all_on(tasks, tokenizer)
    assert [c.name for c in controllers] == [name for name, _ in CONTROLLERS]


def test_bad_layer_index_names_the_key(tasks, tokenizer):
    with pytest.raises(ForgeError, match="train.self_model.target_layer"):
        _all_on(tasks, tokenizer, self_model={"enabled": True, "target_layer": 7})


def test_geometry_watching_a_family_probes_its_prompts_and_reads_its_accuracy(tasks, tokenizer):
    _, controllers = _all_on(tasks, tokenizer, geometry={"enabled": True, "probe_size": 16, "family": "modular"})
    probe = next(c for c in controllers if c.name == "geometry")
    assert probe.prompts == list(tasks["mod_add"]["validation"]["prompt"])[:16]  # mod_add is the modular task here
    probe.ids[str(probe.layers[-1])] = [5.0, 5.0, 5.0, 5.0]  # a flat ID trend
    mixture = {"train_acc": 0.95, "val_acc": 0.93}  # the whole mixture looks generalised...
    probe.on_eval(None, 99, {**mixture, "train_families": {"modular": 0.90}, "val_families": {"modular": 0.05}})
    assert probe.stage == "pre-grok"  # ...while the watched family memorises
    probe.on_eval(None, 199, {**mixture, "train_families": {"modular": 0.97}, "val_families": {"modular": 0.93}})
    assert probe.stage == "consolidation" and probe.stages == [[100, "pre-grok"], [200, "consolidation"]]
    _, controllers = _all_on(tasks, tokenizer)  # family null: the mixture's accuracy, every task's prompts
    whole = next(c for c in controllers if c.name == "geometry")
    whole.ids[str(whole.layers[-1])] = [5.0, 5.0, 5.0, 5.0]
    whole.on_eval(None, 99, {**mixture, "train_families": {"modular": 0.90}, "val_families": {"modular": 0.05}})
    assert whole.stage == "consolidation"
    assert set(whole.prompts) & set(tasks["reverse"]["validation"]["prompt"])


def test_geometry_family_that_no_task_has_names_the_key(tasks, tokenizer):
    with pytest.raises(ForgeError, match="train.geometry.family: 'algebra'.*families here: logic, modular, string"):
        _all_on(tasks, tokenizer, geometry={"enabled": True, "probe_size": 16, "family": "algebra"})


def test_every_controller_state_survives_json_and_safetensors(tasks, tokenizer):
    _, controllers = _all_on(tasks, tokenizer)
    grokfast = next(c for c in controllers if c.name == "grokfast")
    grokfast.filter_state = {"w": {"window": [torch.ones(2), torch.zeros(2)], "sum": torch.ones(2)}}
    next(c for c in controllers if c.name == "edge").recent["logic"].extend([True, False])
    for ctrl in controllers:
        tensors: dict = {}
        text = json.dumps(split_tensors(ctrl.state_dict(), ctrl.name, tensors))
        restored = join_tensors(json.loads(text), tensors)
        ctrl.load_state_dict(restored)
        again: dict = {}
        assert json.dumps(split_tensors(ctrl.state_dict(), ctrl.name, again)) == text
        for key, value in tensors.items():
            assert_close(again[key], value)
