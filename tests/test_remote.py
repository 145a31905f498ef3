"""`forge remote add/list`: where the remote is written, how its URL is stored, and exit 2 on bad input.
The push/pull round trip of a whole smoke DAG is in tests/test_e2e.py."""

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forgelib.cli import app
from forgelib.remote import normalize_url


@pytest.fixture
def dvc_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def read_config(path: Path) -> dict:
    parser = configparser.ConfigParser()
    parser.read(path)
    return {section: dict(parser[section]) for section in parser.sections()}


def test_normalize_url_keeps_urls_and_makes_paths_absolute(tmp_path):
    assert normalize_url("s3://bucket/forge", tmp_path) == "s3://bucket/forge"
    assert normalize_url("ssh://host/srv/forge", tmp_path) == "ssh://host/srv/forge"
    assert normalize_url("store", tmp_path) == str(tmp_path / "store")
    assert normalize_url("../store", tmp_path / "repo") == str(tmp_path / "store")


@pytest.mark.parametrize("local, written, untouched", [(False, ".dvc/config", ".dvc/config.local"),
                                                       (True, ".dvc/config.local", ".dvc/config")])
def test_add_writes_a_default_remote_to_the_chosen_config(dvc_repo, local, written, untouched):
    result = CliRunner().invoke(app, ["remote", "add", "store", "--name", "shared", *(["--local"] if local else [])])
    assert result.exit_code == 0, result.output
    assert written in result.output
    config = read_config(dvc_repo / written)
    assert config['core']["remote"] == "shared"
    assert config["'remote \"shared\"'"]["url"] == str(dvc_repo / "store")
    untouched_text = (dvc_repo / untouched).read_text() if (dvc_repo / untouched).exists() else ""
    assert "shared" not in untouched_text
    listed = CliRunner().invoke(app, ["remote", "list", "--json"])
    assert listed.exit_code == 0 and '"default": true' in listed.output and str(dvc_repo / "store") in listed.output


def test_add_again_replaces_the_url(dvc_repo):
    for url in ("s3://bucket/a", "s3://bucket/b"):
        assert CliRunner().invoke(app, ["remote", "add", url]).exit_code == 0
    assert read_config(dvc_repo / ".dvc/config")["'remote \"storage\"'"]["url"] == "s3://bucket/b"


def test_outside_a_dvc_repo_exits_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["remote", "add", "store"])
    assert result.exit_code == 2
    assert "error:" in result.output and "not inside a DVC repository" in result.output


def test_dvc_missing_exits_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(app, ["remote", "list"])
    assert result.exit_code == 2 and "error: dvc is not on PATH" in result.output


def test_bad_name_exits_2_and_writes_nothing(dvc_repo):
    before = (dvc_repo / ".dvc/config").read_text()
    result = CliRunner().invoke(app, ["remote", "add", "store", "--name", "a b"])
    assert result.exit_code == 2 and "--name" in result.output
    assert (dvc_repo / ".dvc/config").read_text() == before
