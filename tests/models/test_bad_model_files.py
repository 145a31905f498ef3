"""Damaged model files: every `forge` command that takes a model exits 2 with one line
``error: PATH: what is wrong``, and no traceback, whatever the damage."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from forgelib.cli import app
from forgelib.data.tokenizer import ALPHABET, build_char_tokenizer

ROOT = Path(__file__).resolve().parents[2]


def truncate(model_dir: Path) -> None:
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def garble(model_dir: Path) -> None:
    (model_dir / "model.safetensors").write_bytes(b"\x00\xffnot safetensors\n" * 512)


def drop_config(model_dir: Path) -> None:
    (model_dir / "config.json").unlink()


def bigger_tokenizer(model_dir: Path) -> None:
    # 16 more characters than the model's 51-row embedding: ids 51..66 would index past it
    build_char_tokenizer(ALPHABET + "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏ").save_pretrained(model_dir)


DAMAGE = {
    "truncated": (truncate, "model.safetensors is truncated"),
    "garbage": (garble, "model.safetensors is not a valid safetensors file"),
    "no_config": (drop_config, "no config.json"),
    "big_tokenizer": (bigger_tokenizer, "tokenizer has 67 tokens but the model's embedding has 51 rows"),
}


@pytest.fixture(params=sorted(DAMAGE))
def damaged(request, tiny_trained, tmp_path) -> tuple[Path, str]:
    """(a copy of the tiny trained model with one kind of damage, the words that must name it)."""
    damage, words = DAMAGE[request.param]
    model_dir = tmp_path / request.param
    shutil.copytree(tiny_trained[0], model_dir)
    damage(model_dir)
    return model_dir, words


def assert_one_error_line(text: str, path: Path, words: str) -> None:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith(f"error: {path}: "), lines[0]
    assert words in lines[0]
    assert "Traceback" not in text


def test_forge_eval_json_prints_exactly_one_error_line(damaged, tiny_data):
    model_dir, words = damaged
    proc = subprocess.run([sys.executable, "-m", "forgelib.cli", "eval", str(model_dir), "--json",
                           "--data", str(tiny_data)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert_one_error_line(proc.stderr, model_dir, words)


def _merge_recipe(tmp_path: Path, good: Path, bad: Path) -> Path:
    recipe = tmp_path / "merge.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(good), "parameters": {"weight": 0.5}}, {"model": str(bad), "parameters": {"weight": 0.5}}]}))
    return recipe


@pytest.mark.parametrize("command", ["test", "humaneval", "codeppl", "compress", "merge", "train"])
def test_every_command_that_takes_a_model_exits_2(command, damaged, tiny_trained, tiny_data, tmp_path):
    model_dir, words = damaged
    out = tmp_path / "out"
    args = {
        "test": ["test", "--model-path", str(model_dir), "--prompt", "cpy:ab="],
        "humaneval": ["eval", "--benchmark", "humaneval", "--model-path", str(model_dir), "--limit", "1", "--json"],
        "codeppl": ["eval", str(model_dir), "--benchmark", "codeppl", "--json"],
        "compress": ["compression", "compress", "--input", str(model_dir), "--output", str(out),
                     "--params", str(ROOT / "tests/smoke_params.yaml"), "--data", str(tiny_data)],
        "merge": ["merge", str(_merge_recipe(tmp_path, tiny_trained[0], model_dir)), str(out)],
        "train": ["training", "train", "--model-path", str(model_dir), "--out", str(out), "--data", str(tiny_data),
                  "--params", str(ROOT / "tests/smoke_params.yaml"), "--checkpoints", str(tmp_path / "ckpt"),
                  "--metrics-dir", str(tmp_path / "metrics")],
    }[command]
    if command == "merge" and "no config.json" in words:
        words = "is not a Hugging Face model directory"  # the recipe names the model: its path is the recipe's
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # a ForgeError turned into exit 2, nothing else raised
    error = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and words in error[0] and str(model_dir) in error[0], result.output
    assert not out.exists()  # nothing half-written


@pytest.fixture(scope="module")
def container(tiny_trained, tmp_path_factory) -> Path:
    from forgelib.compress.pipeline import compress_model
    from forgelib.config import parse_section

    config = parse_section({"compress": {"stage1": {"embeddings": {"codec": "int8"}, "lm_head": {"codec": "int8"}}}},
                           "compress")
    out = tmp_path_factory.mktemp("compressed") / "c"
    compress_model(tiny_trained[0], out, config, stages=1)
    return out / "stage1" / "model.forge.safetensors"


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("command", ["eval", "decompress"])
def test_a_damaged_container_exits_2(damage, command, container, tmp_path):
    bad = tmp_path / "stage" / container.name
    bad.parent.mkdir()
    data = container.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00\xffnot a container\n" * 256)
    args = ["eval", str(bad.parent), "--json"] if command == "eval" else \
        ["compression", "decompress", str(bad), str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert_one_error_line(result.output, bad, "not a readable container")
    assert not (tmp_path / "out").exists()
