"""dvclive output, no side effects on the enclosing repository; W&B offline logs what dvclive logs,
and a missing wandb package only costs a message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from forgelib.configtools import from_dict
from forgelib.train import forge_loop
from forgelib.train.config import TrainConfig
from forgelib.train.telemetry import Telemetry

from conftest import tiny_model


def test_dvclive_files_without_touching_the_git_repository(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    telemetry = Telemetry(tmp_path / "metrics", config={})
    telemetry.log(5, {"step": 5, "loss": 1.5, "edge/level/logic": 2, "geometry/stage_name": "onset"})
    telemetry.log(10, {"step": 10, "loss": 1.25})
    telemetry.close()
    assert not (tmp_path / ".dvc").exists()  # dvclive would otherwise `dvc init` this repository
    assert (tmp_path / "metrics" / "plots" / "metrics" / "loss.tsv").read_text() == "step\tloss\n5\t1.5\n10\t1.25\n"
    assert (tmp_path / "metrics" / "plots" / "metrics" / "edge" / "level" / "logic.tsv").is_file()
    assert not list((tmp_path / "metrics").rglob("*stage_name*"))


WANDB_TINY_RUN = {"max_steps": 4, "batch_size": 8, "eval_every": 2, "log_every": 2, "checkpoint_every": 0,
                  "eval_limit": 8, "grokfast": {"enabled": True},
                  "wandb": {"project": "forge-test", "mode": "offline"}}


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """Every place wandb writes goes under tmp_path, and it never tries the network."""
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                        "WANDB_DIR": tmp_path, "WANDB_CONFIG_DIR": tmp_path / "wandb-config",
                        "WANDB_CACHE_DIR": tmp_path / "wandb-cache", "WANDB_DATA_DIR": tmp_path / "wandb-data"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


def train_tiny(tmp_path, tasks, tokenizer) -> dict:
    cfg = from_dict(TrainConfig, WANDB_TINY_RUN, "train")
    return forge_loop.train_model(tiny_model(tokenizer), tokenizer, tasks, cfg, out_dir=tmp_path / "model",
                                  checkpoint_dir=tmp_path / "ckpt", metrics_dir=tmp_path / "metrics")


def wandb_records(path: Path):
    """The protobuf records of an offline ``run-*.wandb`` file: a 7-byte W&B header, then the
    LevelDB log format (32 KiB blocks of chunks, each with a 7-byte header: crc32c, length, type
    FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4). wandb 0.31 no longer ships a Python reader."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunk = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is zero padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def test_offline_wandb_run_holds_the_logged_metrics_and_config(offline_wandb, tasks, tokenizer):
    pytest.importorskip("wandb")
    train_tiny(offline_wandb, tasks, tokenizer)
    runs = list((offline_wandb / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, list(offline_wandb.rglob("*.wandb"))
    records = list(wandb_records(runs[0]))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert run.project == "forge-test"
    assert config["max_steps"] == 4 and config["wandb"] == {"project": "forge-test", "mode": "offline"}
    history = {r.history.step.num: {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                    for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"}
    assert sorted(history) == [2, 4]
    # W&B got exactly what dvclive wrote: the same steps and values
    plots = offline_wandb / "metrics" / "plots" / "metrics"
    for name in ("loss", "eval/val_acc", "grokfast/lamb"):
        rows = [line.split("\t") for line in (plots / f"{name}.tsv").read_text().splitlines()[1:]]
        assert {int(step): float(value) for step, value in rows} == {s: h[name] for s, h in history.items()}, name


def test_missing_wandb_skips_with_a_message_and_training_goes_on(tmp_path, monkeypatch, capsys, tasks, tokenizer):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    metrics = train_tiny(tmp_path, tasks, tokenizer)
    assert "wandb is not installed: skipping W&B logging" in capsys.readouterr().err
    assert metrics["steps"] == 4 and (tmp_path / "model" / "model.safetensors").is_file()
    assert (tmp_path / "metrics" / "plots" / "metrics" / "loss.tsv").is_file()
    assert not list(tmp_path.rglob("*.wandb"))
