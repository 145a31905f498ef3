"""dvclive output, no side effects on the enclosing repository, W&B optional."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest

from forgelib.train.telemetry import Telemetry


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


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_missing_wandb_is_skipped_with_a_message(tmp_path, capsys):
    Telemetry(tmp_path / "metrics", config={}, wandb_project="forge").close()
    assert "wandb is not installed" in capsys.readouterr().err
