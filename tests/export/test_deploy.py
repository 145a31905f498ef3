"""The deploy stage: dist/ holds the container, its HF directory and its GGUF, with their bytes and checks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forgelib.config import parse_params
from forgelib.errors import ForgeError
from forgelib.export.config import DeployConfig
from forgelib.export.deploy import card as card_of
from forgelib.export.deploy import deploy
from forgelib.io import read_json

ROOT = Path(__file__).resolve().parents[2]


def test_dist_ships_three_artifacts_with_bytes_and_checks(container_dir, tiny_data, tmp_path):
    dist, metrics_path = tmp_path / "dist", tmp_path / "metrics" / "deploy.json"
    metrics = deploy(DeployConfig(prompts_per_task=4), model_path=container_dir, data_dir=tiny_data, out_dir=dist,
                     metrics_path=metrics_path)
    assert sorted(p.name for p in dist.iterdir()) == ["README.md", "hf", "model.forge.safetensors", "model.gguf"]
    container = container_dir / "model.forge.safetensors"
    assert (dist / "model.forge.safetensors").read_bytes() == container.read_bytes()
    assert read_json(metrics_path) == json.loads(json.dumps(metrics))
    assert metrics["container"]["bytes"] == container.stat().st_size
    assert metrics["gguf"]["bytes"] == (dist / "model.gguf").stat().st_size
    assert metrics["hf"]["bytes"] == sum(p.stat().st_size for p in (dist / "hf").iterdir())
    assert metrics["hf"]["max_abs_logit_diff"] == 0.0 and metrics["hf"]["greedy_match"] == 1.0
    assert metrics["gguf"]["top1_agreement"] == 1.0 and metrics["gguf"]["max_abs_logit_diff"] <= 1e-2
    assert metrics["gguf"]["texts"] == 8 and metrics["gguf"]["tensor_types"] == {"F16": 9, "F32": 3}
    card = (dist / "README.md").read_text()
    for artifact in ("container", "hf", "gguf"):
        assert f"| {metrics[artifact]['bytes']:,} |" in card
    assert "`model.gguf`" in card and "`hf/`" in card and "llama.cpp's loader requires a merges key" in card
    assert "of the checked texts as the source" not in card  # the character vocabulary is exact
    inexact = json.loads(json.dumps(metrics))
    inexact["gguf"]["tokenizer_match"], inexact["gguf"]["tokenizer"]["merges"] = 0.71875, 100
    text = card_of(inexact, container)["description"]
    assert "encodes 71.9% of the checked texts as the source does" in text and "merges key" not in text


def test_stage_script_runs_from_the_dvc_command(container_dir, tiny_data, tmp_path):
    dist, metrics = tmp_path / "dist", tmp_path / "deploy.json"
    run = subprocess.run([sys.executable, "stages/deploy.py", "--params", "tests/smoke_params.yaml", "--model",
                          str(container_dir), "--data", str(tiny_data), "--out", str(dist), "--metrics", str(metrics)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "[forge] stage deploy:" in run.stderr
    assert read_json(metrics)["gguf"]["gguf_type"] == "f16" and (dist / "model.gguf").is_file()


def test_a_model_that_is_not_a_container_is_refused(tiny_trained, tiny_data, tmp_path):
    with pytest.raises(ForgeError, match=r"no compressed container \(model.forge.safetensors\) here"):
        deploy(DeployConfig(), model_path=tiny_trained[0], data_dir=tiny_data, out_dir=tmp_path / "dist",
               metrics_path=tmp_path / "deploy.json")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("key,value,fragment", [
    ("gguf_type", "q3_k", "params.yaml: deploy.gguf_type: expected one of f16, f32, q8_0, q4_0, tq1_0, tq2_0, got 'q3_k'"),
    ("prompts_per_task", 0, "params.yaml: deploy.prompts_per_task: expected an integer >= 1, got 0"),
])
def test_deploy_params_name_the_key(key, value, fragment):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["deploy"][key] = value
    with pytest.raises(ForgeError) as err:
        parse_params(data)
    assert str(err.value) == fragment
