"""The per-phase HumanEval stages: config checks, metric assembly from real sandbox runs, the
stage's errors, and loading a compressed container wherever a model directory is accepted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from forgelib.compress.loader import load_compressed
from forgelib.compress.pipeline import compress_model
from forgelib.compress.loader import container_path, load_model_any
from forgelib.config import parse_section
from forgelib.errors import ForgeError
from forgelib.eval import humaneval
from forgelib.eval.config import HumanEvalConfig
from forgelib.models.hf import load_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("raw, key", [
    ({"limit": 0}, r"humaneval\.limit"),
    ({"limit": 165}, r"humaneval\.limit"),
    ({"max_new_tokens": 0}, r"humaneval\.max_new_tokens"),
    ({"models": {"bad-name": "models/x"}}, r"humaneval\.models\.bad-name"),
    ({"models": {"ok": ""}}, r"humaneval\.models\.ok"),
    ({"modles": {}}, r"humaneval\.modles"),
])
def test_bad_humaneval_params_name_the_key(raw, key):
    with pytest.raises(ForgeError, match=key):
        parse_section({"humaneval": raw}, "humaneval")


def test_embedded_default_has_no_humaneval_stages_and_the_profile_compares_84_problems():
    default = parse_section(yaml.safe_load((ROOT / "params.yaml").read_text()), "humaneval")
    profile = parse_section(yaml.safe_load((ROOT / "forgelib/profiles/smollm2.yaml").read_text()), "humaneval")
    assert default == HumanEvalConfig(models={}, limit=164, max_new_tokens=384)
    # the comparison: the shipped model against the ancestor on >= 84 problems, with the
    # trained model between them to separate what fine-tuning and compression cost
    assert list(profile.models) == ["ancestor", "trained", "compressed"] and profile.limit >= 84


def test_run_humaneval_reports_real_sandbox_outcomes(monkeypatch):
    problems = humaneval.load_problems()
    first = list(problems.values())[:3]
    canned = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in first[:2]]
    canned.append({"task_id": first[2]["task_id"], "completion": "    return None\n"})
    seen = {}

    def fake_generate(model, tokenizer, probs, *, n_samples, temperature, max_new_tokens, limit, seed):
        seen.update(limit=limit, max_new_tokens=max_new_tokens, n_samples=n_samples)
        return canned

    monkeypatch.setattr(humaneval, "generate_samples", fake_generate)
    run = humaneval.run_humaneval(None, None, limit=3, max_new_tokens=17)
    assert seen == {"limit": 3, "max_new_tokens": 17, "n_samples": 1}
    metrics = run.metrics(load_seconds=2.0)
    assert metrics["pass@1"] == pytest.approx(2 / 3)
    assert (metrics["n_problems"], metrics["n_passed"], metrics["n_samples"]) == (3, 2, 3)
    assert metrics["seconds"] >= metrics["generate_seconds"] >= 2.0  # loading counts as generating
    assert all(isinstance(v, (int, float, str)) for v in metrics.values())  # scalars: dvc metrics diff
    lines = [json.loads(line) for line in run.samples_jsonl().splitlines()]
    assert [line["passed"] for line in lines] == [True, True, False]
    assert [line["task_id"] for line in lines] == [p["task_id"] for p in first]
    assert run.report["results"] == {first[0]["task_id"]: [True], first[1]["task_id"]: [True], first[2]["task_id"]: [False]}


def test_stage_with_unknown_name_exits_2_naming_the_key(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"humaneval": {"models": {"ancestor": "models/base/ancestor"}}}))
    proc = subprocess.run([sys.executable, str(ROOT / "stages/humaneval.py"), "trained", "--params", str(params),
                           "--out", str(tmp_path / "m")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "humaneval.models has no entry 'trained'" in proc.stderr and "ancestor" in proc.stderr
    assert not (tmp_path / "m").exists()


def test_stage_writes_its_metrics_and_samples(tiny_trained, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"humaneval": {"models": {"tiny": str(tiny_trained[0])}, "limit": 2,
                                                    "max_new_tokens": 4}}))
    proc = subprocess.run([sys.executable, str(ROOT / "stages/humaneval.py"), "tiny", "--params", str(params),
                           "--out", str(tmp_path / "m")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "m" / "tiny.json").read_text())
    assert set(metrics) == {"pass@1", "n_problems", "n_passed", "n_samples", "model", "max_new_tokens",
                            "generate_seconds", "seconds", "wall_s", "peak_rss_gib"}
    assert (metrics["n_problems"], metrics["n_samples"], metrics["max_new_tokens"]) == (2, 2, 4)
    assert metrics["model"] == str(tiny_trained[0]) and metrics["pass@1"] == metrics["n_passed"] / 2
    lines = [json.loads(line) for line in (tmp_path / "m" / "tiny.samples.jsonl").read_text().splitlines()]
    assert [list(line) for line in lines] == [["task_id", "completion", "passed"]] * 2
    assert [line["task_id"] for line in lines] == ["HumanEval/0", "HumanEval/1"]


def test_load_model_any_reads_containers_like_model_dirs(tiny_trained, tmp_path):
    model_dir, _ = tiny_trained
    config = parse_section({"compress": {"stage1": {"embeddings": {"codec": "int8"}, "lm_head": {"codec": "int8"}}}},
                           "compress")
    compress_model(model_dir, tmp_path / "c", config, stages=1)
    container = tmp_path / "c" / "stage1" / "model.forge.safetensors"
    assert container_path(tmp_path / "c" / "stage1") == container and container_path(container) == container
    assert container_path(model_dir) is None
    reference = load_compressed(container)
    original_tok = load_tokenizer(model_dir)
    ids = torch.tensor([original_tok("abc=cba")["input_ids"]])
    for path in (container, container.parent):
        model, tokenizer = load_model_any(path)
        assert tokenizer("abc=cba")["input_ids"] == ids[0].tolist()
        assert tokenizer.pad_token_id == original_tok.pad_token_id
        with torch.no_grad():
            assert torch.equal(model(ids).logits, reference(ids).logits)
    model, _ = load_model_any(model_dir)  # a plain HF directory still loads as before
    assert type(model).__name__ == "LlamaForCausalLM"
    with pytest.raises(ForgeError, match="not found"):
        load_model_any(tmp_path / "missing")
