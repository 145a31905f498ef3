"""The Forge loop end to end on a tiny model: resume equals an uninterrupted run, stale
checkpoints are not resumed, the fused optimizer equals the filter controller, analysis works."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from forgelib.configtools import from_dict
from forgelib.train import forge_loop
from forgelib.train.analyze import analyze_checkpoint, format_analysis, write_plots
from forgelib.train.config import TrainConfig
from forgelib.train.task_stream import TaskStream

from conftest import tiny_model

ALL_ON = {
    "max_steps": 12, "batch_size": 16, "eval_every": 4, "log_every": 2, "checkpoint_every": 4, "eval_limit": 16,
    "grokfast": {"enabled": True, "schedule": {"enabled": True}},
    "edge": {"enabled": True, "window": 16, "min_samples": 8, "update_every": 2},
    "geometry": {"enabled": True, "every": 4, "probe_size": 24, "layers": [1, -1]},
    "self_model": {"enabled": True},
    "dreams": {"enabled": True, "every": 6, "steps": 2, "self_prompts": 8, "buffer_size": 32},
    "temperature": {"enabled": True},
}


def run(tmp: Path, tasks, tokenizer, params: dict, name: str) -> dict:
    cfg = from_dict(TrainConfig, params, "train")
    metrics = forge_loop.train_model(tiny_model(tokenizer), tokenizer, tasks, cfg, out_dir=tmp / name / "model",
                                     checkpoint_dir=tmp / name / "ckpt", metrics_dir=tmp / name / "metrics")
    return {"metrics": metrics, "weights": load_file(str(tmp / name / "model" / "model.safetensors"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tasks, tokenizer):
    tmp = tmp_path_factory.mktemp("forge")
    return tmp, run(tmp, tasks, tokenizer, ALL_ON, "full")


def test_resume_after_kill_reproduces_the_uninterrupted_run(uninterrupted, tasks, tokenizer, monkeypatch):
    tmp, full = uninterrupted
    real_sample = TaskStream.sample

    def killed_at_step_10(self, step, *args, **kwargs):
        if step == 10 and kwargs.get("salt", "train") == "train":
            raise KeyboardInterrupt("simulated kill")
        return real_sample(self, step, *args, **kwargs)

    monkeypatch.setattr(TaskStream, "sample", killed_at_step_10)
    with pytest.raises(KeyboardInterrupt):
        run(tmp, tasks, tokenizer, ALL_ON, "killed")
    assert sorted(p.name for p in (tmp / "killed" / "ckpt").iterdir()) == ["identity.json", "step-00000004", "step-00000008"]
    monkeypatch.setattr(TaskStream, "sample", real_sample)
    resumed = run(tmp, tasks, tokenizer, ALL_ON, "killed")
    assert resumed["metrics"]["resumed_from"] == 8
    assert_close(resumed["metrics"]["final_loss"], full["metrics"]["final_loss"], rtol=0, atol=0)
    for name, tensor in full["weights"].items():
        assert_close(resumed["weights"][name], tensor, rtol=0, atol=0, msg=name)
    assert resumed["metrics"]["controllers"] == full["metrics"]["controllers"]


def test_saved_model_has_no_self_model_head(uninterrupted, tokenizer):
    _, full = uninterrupted
    assert set(full["weights"]) == set(tiny_model(tokenizer).state_dict())


def test_metrics_cover_every_controller(uninterrupted):
    tmp, full = uninterrupted
    m = full["metrics"]
    assert 0.0 <= m["val_acc"] <= 1.0 and set(m["val_families"]) == {"modular", "string", "logic"}
    assert {"validation", "step_time_ms", "final_loss"} <= set(m)
    plots = tmp / "full" / "metrics" / "plots" / "metrics"
    for name in ("loss", "grad_norm", "step_time_ms", "grokfast/lamb", "geometry/id/L2", "edge/level/string",
                 "self_model/mse", "dream/buffer_acc_after", "temperature", "eval/val_family/logic",
                 "eval/train_family/logic"):
        assert (plots / f"{name}.tsv").is_file(), name
    assert m["controllers"]["dreams"]["dream/buffer_size"] > 0


def test_completed_run_resumes_to_the_same_model_and_other_params_start_fresh(uninterrupted, tasks, tokenizer):
    tmp, full = uninterrupted
    again = run(tmp, tasks, tokenizer, ALL_ON, "full")
    assert again["metrics"]["resumed_from"] == 12
    assert_close(again["weights"]["lm_head.weight"], full["weights"]["lm_head.weight"], rtol=0, atol=0)
    shutil.copytree(tmp / "full" / "ckpt", tmp / "other" / "ckpt")
    other = run(tmp, tasks, tokenizer, {**ALL_ON, "lr": 5e-4}, "other")
    assert other["metrics"]["resumed_from"] == 0


def test_fused_grokfast_adamw_equals_filter_controller(tmp_path, tasks, tokenizer):
    base = {"max_steps": 6, "batch_size": 8, "eval_every": 6, "eval_limit": 8, "grad_clip": 0.0,
            "checkpoint_every": 0, "weight_decay": 0.01}
    filtered = run(tmp_path, tasks, tokenizer, {**base, "grokfast": {"enabled": True, "filter": "ema"}}, "a")
    fused = run(tmp_path, tasks, tokenizer, {**base, "grokfast": {"enabled": True, "filter": "ema_fused"}}, "b")
    plain = run(tmp_path, tasks, tokenizer, base, "c")
    for name, tensor in filtered["weights"].items():
        assert_close(fused["weights"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(plain["weights"]["lm_head.weight"], filtered["weights"]["lm_head.weight"])


def test_analyze_checkpoint_reports_trajectory_and_writes_plots(uninterrupted, tmp_path):
    tmp, _ = uninterrupted
    analysis = analyze_checkpoint(tmp / "full" / "ckpt")
    assert analysis["step"] == 12
    assert [r["step"] for r in analysis["history"]] == [2, 4, 6, 8, 10, 12]
    assert [s for s, _ in analysis["stages"]] == [4, 8, 12]
    assert set(analysis["curriculum_levels"]) == {"modular", "string", "logic"}
    assert len(analysis["dream_cycles"]) == 2
    text = format_analysis(analysis)
    assert "grokking stages" in text and "dream @6" in text
    names = {p.name for p in write_plots(analysis, tmp_path / "plots")}
    assert names == {"loss.png", "accuracy.png", "geometry.png", "curriculum.png", "grokfast.png", "dreams.png"}


@pytest.mark.parametrize("decay_norms", [True, False])
def test_decay_norms_false_leaves_the_norm_gains_undecayed(tokenizer, decay_norms):
    model = tiny_model(tokenizer)
    cfg = from_dict(TrainConfig, {"lr": 0.1, "weight_decay": 1.0, "decay_norms": decay_norms}, "train")
    optimizer = forge_loop.make_optimizer(cfg, model, [])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # zero gradients: only the decoupled decay moves a weight, by a factor 1 - lr * wd
    for name, p in model.named_parameters():
        decayed = p.dim() >= 2 or decay_norms
        assert_close(p.detach(), before[name] * (0.9 if decayed else 1.0)), name


def test_forward_by_length_gives_the_one_pass_loss_and_gradient(tasks, tokenizer):
    from forgelib.eval.scoring import score_answers

    stream = TaskStream(tasks, tokenizer, seed=0)
    batch = stream.collate(stream.sample(0, 24))
    lengths = batch["attention_mask"].sum(1)
    assert lengths.min() < lengths.max() - 5  # rows of very different lengths: the case that pays
    model = tiny_model(tokenizer)
    results = {}
    for groups in (1, 3, 24):
        model.zero_grad()
        out = forge_loop.forward_by_length(model, batch, groups, output_hidden_states=True)
        assert out.logits.shape == (24, batch["input_ids"].shape[1], len(tokenizer))
        real = batch["attention_mask"].bool()
        hidden = out.hidden_states[-1][real].square().mean()  # over real positions, as masked_mse reads them
        loss = score_answers(out.logits, batch["labels"]).loss + hidden
        loss.backward()
        results[groups] = (float(loss.detach()), out.logits[real], [p.grad.clone() for p in model.parameters()])
    for groups in (3, 24):
        assert abs(results[groups][0] - results[1][0]) < 1e-5
        assert_close(results[groups][1], results[1][1], atol=1e-5, rtol=1e-4)
        for a, b in zip(results[groups][2], results[1][2]):
            assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_length_groups_train_to_the_same_weights(tmp_path, tasks, tokenizer):
    params = {"max_steps": 6, "batch_size": 16, "eval_every": 3, "eval_limit": 8, "checkpoint_every": 0,
              "self_model": {"enabled": True}}
    one = run(tmp_path, tasks, tokenizer, params, "one")["weights"]
    grouped = run(tmp_path, tasks, tokenizer, {**params, "length_groups": 4}, "grouped")["weights"]
    for name in one:
        assert_close(grouped[name], one[name], atol=1e-5, rtol=1e-4)
