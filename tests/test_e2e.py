"""End to end: `dvc repro` of the whole DAG on smoke-sized params, in a temporary git clone.

Asserts what the spine promises: specialists beat the ancestor on their own family, every phase
writes its contract metrics, a second `dvc repro` is a no-op, and a forced rebuild from the
same params gives byte-identical model files (same dvc.lock hashes).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def sh(args, cwd, **kw):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "TQDM_DISABLE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    work = tmp_path_factory.mktemp("forge") / "repo"
    files = sh(["git", "ls-files", "-co", "--exclude-standard"], ROOT).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / rel)
    shutil.copy(ROOT / "tests" / "smoke_params.yaml", work / "params.yaml")
    for path in (work / "metrics").glob("**/*"):
        if path.is_file():
            path.unlink()
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "smoke"]):
        assert sh(args, work).returncode == 0
    result = sh(["dvc", "repro"], work, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work


def lock_hashes(work: Path) -> dict:
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    return {
        out["path"]: out.get("md5")
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
        if out["path"].startswith("models")
    }


def test_specialists_beat_ancestor_on_own_family(clone):
    base = json.loads((clone / "metrics" / "base.json").read_text())
    assert set(base["specialists"]) == {"arithmetic", "string", "logic"}
    for name, family in base["specialists"].items():
        own = base["models"][name]["families"][family]
        assert own > base["models"]["ancestor"]["families"][family], (name, family, own)
    for result in base["models"].values():
        assert set(result) >= {"tasks", "families", "mean"}
        assert all(set(t) == {"exact_match", "n"} for t in result["tasks"].values())


def test_every_phase_writes_its_contract(clone):
    evo = json.loads((clone / "metrics" / "evomerge.json").read_text())
    assert {"evolved_test_mean", "best_parent_test_mean", "uniform_task_arithmetic_test_mean", "generations",
            "ancestor_test_mean", "oracle_test_mean", "evolved_to_oracle", "best_single_model_test_mean"} <= set(evo)
    assert all(set(g) >= {"best", "mean", "worst"} for g in evo["generations"])
    base = json.loads((clone / "metrics" / "base.json").read_text())
    singles = [base["models"][name] for name in ("ancestor", *base["specialists"])]
    # the oracle is per family the best of the ancestor and the specialists, averaged
    oracle = {f: max(m["families"][f] for m in singles) for f in singles[0]["families"]}
    assert evo["oracle_test_mean"] == pytest.approx(sum(oracle.values()) / len(oracle))
    assert evo["evolved_to_oracle"] == pytest.approx(evo["evolved_test_mean"] / evo["oracle_test_mean"])
    assert evo["best_single_model_test_mean"] == pytest.approx(max(m["mean"] for m in singles))
    train = json.loads((clone / "metrics" / "train.json").read_text())
    assert {"test_mean", "input_test_mean", "steps_to_modular_0_9", "trained"} <= set(train)
    assert "families" in train["trained"]
    comp = json.loads((clone / "metrics" / "compress.json").read_text())
    for stage in ("stage1", "final"):
        assert {"bytes", "n_params", "bits_per_param", "fraction_fp32", "test_mean", "retention",
                "payload_bits_per_linear_weight"} <= set(comp[stage])
        assert comp[stage]["bytes"] == (clone / "models" / "compressed" / stage / "model.forge.safetensors").stat().st_size
    assert comp["final"]["input"] == "stage1"
    assert "input_test_mean" in comp
    assert (clone / "models" / "evolved" / "recipe.yaml").is_file()
    assert (clone / "metrics" / "summary.md").is_file()


def test_second_repro_is_a_noop(clone):
    result = sh(["dvc", "status"], clone)
    assert result.returncode == 0
    assert "up to date" in result.stdout, result.stdout


def test_forced_rebuild_is_byte_identical(clone):
    before = lock_hashes(clone)
    result = sh(["dvc", "repro", "--force", "ancestor", "specialist"], clone, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert lock_hashes(clone) == before
