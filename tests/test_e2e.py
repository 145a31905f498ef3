"""End to end: `dvc repro` of the whole DAG on smoke-sized params, in a temporary git clone.

Asserts what the spine promises: specialists beat the ancestor on their own family, every phase
writes its contract metrics, a second `dvc repro` is a no-op, and a forced rebuild from the
same params gives byte-identical model files (same dvc.lock hashes), a fresh clone that pulls from
a remote has nothing to rerun, and a queued `train.lr` sweep runs.
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


def env() -> dict:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "TQDM_DISABLE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def sh(args, cwd, **kw):
    return subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, **kw)


def sh_to_file(args, cwd, log: Path, **kw) -> subprocess.CompletedProcess:
    """``sh`` with the output in ``log``: for commands that leave daemons behind (`dvc exp run
    --run-all` forks its queue's workers), which would hold a captured pipe open, so that
    ``subprocess.run`` waited for them instead of for the command."""
    with open(log, "w") as out:
        done = subprocess.run(args, cwd=cwd, env=env(), stdout=out, stderr=subprocess.STDOUT, text=True, **kw)
    return subprocess.CompletedProcess(args, done.returncode, log.read_text(), "")


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
    qs = json.loads((clone / "metrics" / "quietstar.json").read_text())
    assert set(qs["arms"]) == {"sft", "pause", "thoughts", "random_thoughts"} and isinstance(qs["enabled_by_default"], bool)
    assert all({"test_mean", "mean", "std"} <= set(arm) for arm in qs["arms"].values())
    # quietstar.enabled: false passes the evolved model on unchanged
    assert (clone / "models" / "quietstar" / "model.safetensors").read_bytes() == \
        (clone / "models" / "evolved" / "model.safetensors").read_bytes()
    spec = json.loads((clone / "metrics" / "specialize.json").read_text())
    assert {"input_test_mean", "test_mean", "test_mean_adapted", "svf", "bake"} <= set(spec)
    assert {"experts", "dispatch_accuracy", "mixing"} <= set(spec["svf"])
    assert {"prompted_base", "unprompted_base", "baked", "kl_base", "kl_baked", "drift_kl"} <= set(spec["bake"])
    assert (clone / "models" / "specialized" / "svf_experts.safetensors").is_file()
    assert "adapted" in comp and "final" in comp["adapted"]
    agents = json.loads((clone / "metrics" / "agents.json").read_text())
    assert set(agents["tools"]) == {"no_tool", "mcp", "wrong_tool", "oracle_call"}
    assert {"on", "off", "write_all", "random_writes", "std", "by_distance"} <= set(agents["memory"])
    assert {"best_test", "best_hand_test", "best_calls_per_item", "hand_calls_per_item", "evaluations",
            "valid_proposals", "proposals"} <= set(agents["adas"])
    assert json.loads((clone / "agents" / "best.json").read_text())["blocks"]
    # every stage with a metrics file records its cost there (forgelib.runtime.stage)
    costed = ["prepare.json", "ancestor/metrics.json", *(f"specialist/{n}/metrics.json" for n in base["specialists"]),
              "base.json", "evomerge.json", "quietstar.json", "train.json", "specialize.json", "agents.json",
              "compress.json", "summary.json"]
    for rel in costed:
        metrics = json.loads((clone / "metrics" / rel).read_text())
        assert metrics["wall_s"] > 0 and metrics["peak_rss_gib"] > 0, rel


def test_second_repro_is_a_noop(clone):
    result = sh(["dvc", "status"], clone)
    assert result.returncode == 0
    assert "up to date" in result.stdout, result.stdout


def test_forced_rebuild_is_byte_identical(clone):
    before = lock_hashes(clone)
    # the ancestor and one specialist (the others run the same code on other rows): ~50 s less
    result = sh(["dvc", "repro", "--force", "ancestor", "specialist@string"], clone, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert lock_hashes(clone) == before


def output_snapshot(work: Path) -> dict:
    """Every file under the DAG's output folders: relative path -> (size, content hash)."""
    import hashlib

    snap = {}
    for folder in ("data", "models", "metrics", "checkpoints", "agents"):
        for path in sorted((work / folder).rglob("*")):
            if path.is_file():
                snap[str(path.relative_to(work))] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return snap


# One invalid value per params section; each must be reported as `section.key`.
BAD_PARAMS = {
    "prepare.n_train": -5,
    "base.ancestor.lr": 5.0,
    "evomerge.population": 0,
    "quietstar.steps": 0,
    "train.lr": -1.0,
    "specialize.svf.steps": 0,
    "agents.adas.generations": -1,
    "compress.heal.steps": -1,
    "humaneval.limit": 0,
    "report.phases": ["nope"],
    "gates.train.min_modular_accuracy": 2.0,
}


@pytest.mark.parametrize("key", list(BAD_PARAMS))
def test_invalid_param_deletes_nothing(clone, key):
    """`dvc repro` with an invalid param fails in the `validate` stage, naming the key, before DVC
    removes any stage's outputs; restoring the file leaves the DAG up to date (nothing to rebuild)."""
    params_path = clone / "params.yaml"
    good = params_path.read_text()
    before = output_snapshot(clone)
    assert any(p.startswith("data/") for p in before) and any(p.startswith("models/") for p in before)
    data = yaml.safe_load(good)
    node, parts = data, key.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = BAD_PARAMS[key]
    params_path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        result = sh(["dvc", "repro"], clone, timeout=300)
        assert result.returncode != 0
        assert f"params.yaml: {key}:" in result.stdout + result.stderr, result.stderr[-2000:]
        assert output_snapshot(clone) == before
        forge = sh(["forge", "run-pipeline"], clone, timeout=120)
        assert forge.returncode == 2 and f"params.yaml: {key}:" in forge.stderr, forge.stderr[-2000:]
        assert output_snapshot(clone) == before
    finally:
        params_path.write_text(good)
    status = sh(["dvc", "status"], clone)
    assert "up to date" in status.stdout, status.stdout


# Keys that measure time or where a run started, not what it computed: the only keys a
# resumed run may differ in from an uninterrupted one.
TIMING_KEYS = {"seconds", "evaluations_this_run", "seconds_this_run", "step_time_ms", "resumed_from",
               "wall_s", "peak_rss_gib"}


def without_timing(obj):
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def kill_when(args, cwd, ready, timeout=600):
    """Start ``args``, SIGKILL it as soon as ``ready()`` holds, and return the killed process."""
    import signal
    import time

    proc = subprocess.Popen(args, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"{args} ended before the kill point: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return proc


def file_hashes(folder: Path) -> dict:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_evomerge_killed_mid_generation_resumes_to_the_uninterrupted_result(clone, tmp_path):
    """A real SIGKILL in generation 1 (5 of the search's recipes scored), then a resume: recipe,
    model bytes and metrics equal the uninterrupted `dvc repro` run's (timing keys aside)."""
    state, out, metrics = tmp_path / "state", tmp_path / "evolved", tmp_path / "evomerge.json"
    args = [sys.executable, "stages/evomerge.py", "--state", str(state), "--out", str(out),
            "--metrics", str(metrics), "--plots", str(tmp_path / "plots")]

    def five_scored():
        try:
            return len(json.loads((state / "cache.json").read_text())) >= 5
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    kill_when(args, clone, five_scored)
    assert not out.exists() and json.loads((state / "state.json").read_text())["generation"] == 1
    resumed = sh(args, clone, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert file_hashes(out) == file_hashes(clone / "models" / "evolved")
    reference = json.loads((clone / "metrics" / "evomerge.json").read_text())
    got = json.loads(metrics.read_text())
    assert got["evaluations_this_run"] < got["evaluations"] == reference["evaluations"]
    assert without_timing(got) == without_timing(reference)


def test_train_killed_between_checkpoints_resumes_to_the_uninterrupted_result(clone, tmp_path):
    """A real SIGKILL after the step-15 checkpoint of a 30-step run, then a resume from it:
    model bytes and metrics equal the uninterrupted `dvc repro` run's (timing keys aside)."""
    ckpt, out, metrics = tmp_path / "ckpt", tmp_path / "trained", tmp_path / "train.json"
    args = [sys.executable, "stages/train.py", "--checkpoints", str(ckpt), "--out", str(out),
            "--metrics", str(metrics), "--plots", str(tmp_path / "plots")]
    kill_when(args, clone, lambda: (ckpt / "step-00000015" / "trainer.json").is_file())
    assert not out.exists() and not (ckpt / "step-00000030").exists()
    resumed = sh(args, clone, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr and json.loads(metrics.read_text())["loop"]["resumed_from"] == 15
    assert file_hashes(out) == file_hashes(clone / "models" / "trained")
    reference = json.loads((clone / "metrics" / "train.json").read_text())
    assert without_timing(json.loads(metrics.read_text())) == without_timing(reference)


def commit_all(work: Path, message: str) -> None:
    """Commit what DVC leaves to git (dvc.lock, the uncached metrics, .dvc/config): a clone or a
    queued experiment starts from the last commit."""
    assert sh(["git", "add", "-A"], work).returncode == 0
    if sh(["git", "status", "--porcelain"], work).stdout.strip():
        result = sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message], work)
        assert result.returncode == 0, result.stderr


def test_push_then_pull_into_a_fresh_clone_is_up_to_date(clone, tmp_path):
    """`forge remote add` + `dvc push`, then `git clone` + `dvc pull` elsewhere: the fresh clone
    has every output, the resume state and the validate stamp included, so nothing reruns."""
    store = tmp_path / "store"
    added = sh(["forge", "remote", "add", str(store)], clone)
    assert added.returncode == 0 and ".dvc/config" in added.stdout, added.stderr
    commit_all(clone, "smoke outputs and remote")
    push = sh(["dvc", "push"], clone, timeout=600)
    assert push.returncode == 0, push.stderr[-2000:]
    fresh = tmp_path / "fresh"
    assert sh(["git", "clone", "-q", str(clone), str(fresh)], tmp_path).returncode == 0
    pull = sh(["dvc", "pull"], fresh, timeout=600)
    assert pull.returncode == 0, pull.stderr[-2000:]
    status = sh(["dvc", "status"], fresh)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
    for folder in ("checkpoints/train", "checkpoints/evomerge", "models/compressed"):
        assert file_hashes(fresh / folder) == file_hashes(clone / folder), folder
    assert (fresh / "checkpoints" / "params.ok").is_file()


def test_queued_sweep_over_train_lr_runs_two_experiments(clone):
    """The README's sweep: two `dvc exp run --queue -S train.lr=...`, run by the queue's workers in
    temporary copies of the repo (tracked files + DVC outputs), each with its own train metrics.
    Each experiment targets the `train` stage, so it stops there: the stages after it rerun in
    the README's sweep but add nothing to what this test checks (with them this test took 341 s,
    without them 63 s, on a 2-core AMD EPYC)."""
    commit_all(clone, "smoke outputs")
    lrs = ("0.0005", "0.001")
    for lr in lrs:
        queued = sh(["dvc", "exp", "run", "--queue", "-S", f"train.lr={lr}", "-n", f"lr-{lr}", "train"], clone)
        assert queued.returncode == 0, queued.stderr[-2000:]
    run = sh_to_file(["dvc", "exp", "run", "--run-all", "-j", "2"], clone, clone.parent / "sweep.log", timeout=1500)
    sh(["dvc", "queue", "stop", "--kill"], clone)  # workers left idle (seen when an experiment's report gate fails)
    assert run.returncode == 0, run.stdout[-3000:]
    show = json.loads(sh(["dvc", "exp", "show", "--json"], clone).stdout)
    runs = [rev for commit in show for exp in commit["experiments"] or [] for rev in exp["revs"]]
    assert sorted(r["name"] for r in runs) == sorted(f"lr-{lr}" for lr in lrs), [r["name"] for r in runs]
    train = {}
    for rev in runs:
        data = rev["data"]
        train[data["params"]["params.yaml"]["data"]["train"]["lr"]] = without_timing(data["metrics"]["metrics/train.json"]["data"])
    assert set(train) == {float(lr) for lr in lrs}
    assert train[0.0005] != train[0.001]
