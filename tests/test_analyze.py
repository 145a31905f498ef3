"""`forge analyze`: each phase's cost, gain and gates from metrics/, and the changes since a revision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forgelib.analyze import analyze, compare, format_analysis
from forgelib.cli import app


def write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def metrics(tmp_path) -> Path:
    m = tmp_path / "metrics"
    write(m / "prepare.json", {"vocab_size": 40, "wall_s": 3.0, "peak_rss_gib": 0.3})
    write(m / "ancestor" / "metrics.json", {"loss": 0.4, "step": 100, "wall_s": 60.0, "peak_rss_gib": 0.5})
    write(m / "specialist" / "arith" / "metrics.json", {"loss": 0.3, "wall_s": 20.0, "peak_rss_gib": 0.6})
    write(m / "base.json", {"models": {"ancestor": {"mean": 0.40}, "arith": {"mean": 0.55}},
                            "specialists": {"arith": "arithmetic"}, "wall_s": 9.0, "peak_rss_gib": 0.4})
    write(m / "evomerge.json", {"evolved_test_mean": 0.50, "ancestor_test_mean": 0.40, "best_method": "ties",
                                "wall_s": 100.0, "peak_rss_gib": 0.9})
    write(m / "train.json", {"test_mean": 0.58, "input_test_mean": 0.50,
                             "trained": {"families": {"modular": 0.2, "string": 0.9}},
                             "input": {"families": {"modular": 0.1, "string": 0.95}},
                             "loop": {"controllers": {"geometry": {"geometry/stage": 2.0},
                                                      "grokfast": {"grokfast/lamb": 2.0}}},
                             "wall_s": 50.0, "peak_rss_gib": 1.2})
    write(m / "compress.json", {"input_test_mean": 0.58, "final": {"test_mean": 0.46, "retention": 0.79},
                                "stage1": {"test_mean": 0.5}, "wall_s": 30.0, "peak_rss_gib": 0.7})
    write(m / "summary.json", {"gates": {"base.arith.own_family": {"passed": True, "measured": "0.9 >= 0.8"},
                                         "train.modular_accuracy": {"passed": True, "measured": "0.2 >= 0.07"},
                                         "compress.final_retention": {"passed": False, "measured": "0.79 >= 0.8"}},
                               "all_gates_passed": False, "wall_s": 1.0, "peak_rss_gib": 0.2})
    return m


def test_every_phase_has_its_cost_gain_and_gates(metrics):
    result = analyze(metrics)
    phases = result["phases"]
    assert list(phases) == ["prepare", "ancestor", "specialist@arith", "base", "evomerge", "train", "compress", "report"]
    for phase in phases.values():
        assert {"test_mean", "wall_s", "peak_rss_gib", "gates"} <= set(phase)
    assert phases["ancestor"]["wall_s"] == 60.0 and phases["ancestor"]["peak_rss_gib"] == 0.5
    gains = {name: (p["test_mean"], p["delta_test_mean"], p["compared_to"]) for name, p in phases.items()}
    assert gains["specialist@arith"] == (0.55, pytest.approx(0.15), "ancestor")
    assert gains["evomerge"] == (0.50, pytest.approx(0.10), "ancestor")
    assert gains["train"] == (0.58, pytest.approx(0.08), "evomerge")
    assert gains["compress"] == (0.46, pytest.approx(-0.12), "train")
    assert gains["prepare"] == gains["base"] == gains["report"] == (None, None, None)
    assert set(phases["base"]["gates"]) == {"base.arith.own_family"}
    assert phases["compress"]["gates"]["compress.final_retention"]["passed"] is False
    assert phases["train"]["controllers"]["grokfast"] == {"grokfast/lamb": 2.0}
    assert phases["train"]["family_delta"] == {"modular": pytest.approx(0.1), "string": pytest.approx(-0.05)}
    assert result["total"] == {"wall_s": 273.0, "peak_rss_gib": 1.2}
    assert result["all_gates_passed"] is False
    text = format_analysis(result)
    assert "stage=active" in text and "compress.final_retention: 0.79 >= 0.8" in text and "0/1 passed" in text


def test_phases_without_cost_are_reported_with_nulls(tmp_path):
    write(tmp_path / "base.json", {"models": {"ancestor": {"mean": 0.4}}})
    phases = analyze(tmp_path)["phases"]
    assert phases == {"ancestor": {**phases["ancestor"], "test_mean": 0.4, "wall_s": None, "peak_rss_gib": None},
                      "base": phases["base"]}
    assert phases["ancestor"]["metrics_file"] is None


def test_compare_sorts_dvc_metrics_diff_into_phases():
    diff = {
        "metrics/base.json": {"models.ancestor.mean": {"old": 0.4, "new": 0.45, "diff": 0.05},
                              "models.arith.families.arithmetic": {"old": 0.8, "new": 0.9, "diff": 0.1}},
        "metrics/specialist/arith/metrics.json": {"wall_s": {"old": 20.0, "new": 25.0, "diff": 5.0}},
        "metrics/compress.json": {"final.test_mean": {"old": 0.5, "new": 0.4, "diff": -0.1},
                                  "stage1.bytes": {"old": 100, "new": 90, "diff": -10}},
        "metrics/summary.json": {"gates.compress.final_retention.passed": {"old": True, "new": False, "diff": -1},
                                 "gates.compress.final_retention.measured": {"old": "0.9 >= 0.8", "new": "0.7 >= 0.8"}},
    }
    got = compare(diff, order=["ancestor", "specialist@arith", "compress"])
    assert list(got) == ["ancestor", "specialist@arith", "compress"]
    assert got["ancestor"]["test_mean"] == {"old": 0.4, "new": 0.45, "diff": 0.05}
    assert got["specialist@arith"]["wall_s"]["diff"] == 5.0
    assert got["specialist@arith"]["other"] == {"models.arith.families.arithmetic": {"old": 0.8, "new": 0.9, "diff": 0.1}}
    assert got["compress"]["test_mean"]["new"] == 0.4 and set(got["compress"]["other"]) == {"stage1.bytes"}
    assert got["compress"]["gates"]["compress.final_retention"] == {
        "passed": {"old": True, "new": False}, "measured": {"old": "0.9 >= 0.8", "new": "0.7 >= 0.8"}}


def test_cli_json_contract(metrics):
    result = CliRunner().invoke(app, ["analyze", "--json", "--metrics", str(metrics)])
    assert result.exit_code == 0, result.output
    phases = json.loads(result.output)["phases"]
    assert phases["train"]["test_mean"] == 0.58 and phases["train"]["wall_s"] == 50.0
    assert phases["train"]["peak_rss_gib"] == 1.2 and "train.modular_accuracy" in phases["train"]["gates"]
    missing = CliRunner().invoke(app, ["analyze", "--metrics", str(metrics / "nope")])
    assert missing.exit_code == 2 and "--metrics" in missing.output


def test_cli_compare_reads_dvc_metrics_diff(metrics, tmp_path):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    repo = metrics.parent

    def sh(*args):
        proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    (repo / "dvc.yaml").write_text("metrics:\n  - metrics/train.json\n  - metrics/summary.json\n")
    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "before")
    train = json.loads((metrics / "train.json").read_text())
    write(metrics / "train.json", {**train, "test_mean": 0.60, "wall_s": 40.0})
    out = json.loads(sh(str(Path(sys.executable).parent / "forge"), "analyze", "--json", "--compare", "HEAD"))
    assert out["compare"]["rev"] == "HEAD"
    assert out["compare"]["phases"]["train"]["test_mean"]["old"] == 0.58
    assert out["compare"]["phases"]["train"]["wall_s"] == {"old": 50.0, "new": 40.0, "diff": -10.0}
    text = sh(str(Path(sys.executable).parent / "forge"), "analyze", "--compare", "HEAD")
    assert "train" in text.split("changes since HEAD")[1] and "test_mean 0.58 -> 0.6" in text
    bad = subprocess.run([str(Path(sys.executable).parent / "forge"), "analyze", "--compare", "no-such-rev"],
                         cwd=repo, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "no-such-rev" in bad.stderr


def test_the_new_phases_sit_in_dag_order_with_their_own_figures(metrics):
    write(metrics / "quietstar.json", {"task": "long_add", "enabled_by_default": False, "wall_s": 140.0, "peak_rss_gib": 0.5,
                                       "arms": {"sft": {"mean": 0.17}, "thoughts": {"mean": 0.25}}})
    write(metrics / "specialize.json", {"test_mean": 0.58, "test_mean_adapted": 0.61, "input_test_mean": 0.58,
                                        "wall_s": 170.0, "peak_rss_gib": 0.6})
    write(metrics / "agents.json", {"tools": {"mcp": 0.9, "no_tool": 0.3}, "memory": {"on": 0.9, "off": 0.5, "std": 0.02},
                                    "adas": {"best_test": 0.9, "best_hand_test": 0.7}, "wall_s": 240.0, "peak_rss_gib": 0.7})
    compress = json.loads((metrics / "compress.json").read_text())
    write(metrics / "compress.json", {**compress, "adapted": {"input_test_mean_adapted": 0.61}})
    phases = analyze(metrics)["phases"]
    assert list(phases) == ["prepare", "ancestor", "specialist@arith", "base", "evomerge", "quietstar", "train",
                            "specialize", "agents", "compress", "report"]
    assert phases["quietstar"]["arms"] == {"sft": 0.17, "thoughts": 0.25} and phases["quietstar"]["test_mean"] is None
    assert (phases["specialize"]["test_mean"], phases["specialize"]["delta_test_mean"]) == (0.58, 0.0)
    assert phases["specialize"]["test_mean_adapted"] == 0.61
    assert phases["agents"]["adas"]["best_test"] == 0.9 and phases["agents"]["memory"]["off"] == 0.5
    assert phases["compress"]["compared_to"] == "specialize"
