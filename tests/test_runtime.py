"""The stage decorator: exit code 2 on ForgeError, and the stage's time and memory in one closing
line and in its metrics JSON."""

import json
import re
import subprocess
import sys
import textwrap


def run_script(tmp_path, body: str, env: dict | None = None) -> subprocess.CompletedProcess:
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script), "arg"], capture_output=True, text=True,
                          env={"FORGE_NUM_THREADS": "1", "PATH": ""} if env is None else env)


def test_stage_reports_wall_time_and_peak_rss(tmp_path):
    proc = run_script(tmp_path, """
        import time
        from forgelib.runtime import stage

        @stage
        def main():
            block = bytearray(300 * 2**20)  # touch 300 MiB so the peak RSS must exceed it
            block[:: 4096] = b"x" * len(block[:: 4096])
            time.sleep(0.3)

        main()
    """)
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"\[forge\] stage probe arg: ([\d.]+) s wall, peak RSS ([\d.]+) GiB, 1 torch thread", proc.stderr)
    assert match, proc.stderr
    assert float(match.group(1)) >= 0.3
    assert float(match.group(2)) >= 300 / 1024


def test_stage_maps_forge_error_to_exit_2_without_the_timing_line(tmp_path):
    proc = run_script(tmp_path, """
        from forgelib.errors import ForgeError
        from forgelib.runtime import stage

        @stage
        def main():
            raise ForgeError("params.yaml: x.y: bad")

        main()
    """)
    assert proc.returncode == 2
    assert "params.yaml: x.y: bad" in proc.stderr and "[forge] stage" not in proc.stderr


def test_stage_adds_its_cost_to_the_metrics_json_it_returns(tmp_path):
    metrics = tmp_path / "stage.json"
    metrics.write_text(json.dumps({"test_mean": 0.5, "nested": {"a": 1}}))
    proc = run_script(tmp_path, f"""
        import time
        from forgelib.runtime import stage

        @stage
        def main():
            time.sleep(0.3)
            return {str(metrics)!r}

        main()
    """)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(metrics.read_text())
    assert {k: got[k] for k in ("test_mean", "nested")} == {"test_mean": 0.5, "nested": {"a": 1}}
    assert set(got) == {"test_mean", "nested", "wall_s", "peak_rss_gib"}
    assert got["wall_s"] >= 0.3 and 0 < got["peak_rss_gib"] < 64
    logged = re.search(r"([\d.]+) s wall, peak RSS ([\d.]+) GiB", proc.stderr)
    assert abs(float(logged.group(1)) - got["wall_s"]) <= 0.06
    assert abs(float(logged.group(2)) - got["peak_rss_gib"]) <= 0.006


def test_stage_creates_a_cost_only_metrics_file_and_writes_nothing_on_error(tmp_path):
    created, failed = tmp_path / "new" / "metrics.json", tmp_path / "failed.json"
    proc = run_script(tmp_path, f"""
        from forgelib.runtime import stage

        @stage
        def main():
            return {str(created)!r}

        main()
    """)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(created.read_text())) == {"wall_s", "peak_rss_gib"}
    proc = run_script(tmp_path, f"""
        from forgelib.errors import ForgeError
        from forgelib.runtime import stage

        @stage
        def main():
            open({str(failed)!r}, "w").write("{{}}")
            raise ForgeError("gates failed")

        main()
    """)
    assert proc.returncode == 2 and json.loads(failed.read_text()) == {}


def _seeded_training(seed: int) -> tuple[list[float], int]:
    """A few seeded SGD steps and the process they ran in (a worker of worker_pool or this one)."""
    import os

    import torch

    torch.manual_seed(seed)
    layer = torch.nn.Linear(8, 8)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(32, 8)
    for _ in range(5):
        loss = (layer(x) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return layer.weight.flatten().tolist(), os.getpid()


def _fails(message: str) -> None:
    from forgelib.errors import ForgeError

    raise ForgeError(message)


def test_worker_pool_results_do_not_depend_on_the_worker_count(monkeypatch):
    import os

    from forgelib.runtime import InlineExecutor, worker_pool

    results = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("FORGE_WORKERS", workers)
        with worker_pool(3) as pool:
            assert isinstance(pool, InlineExecutor) == (workers == "1")
            results[workers] = [f.result() for f in [pool.submit(_seeded_training, s) for s in (0, 1, 2)]]
    assert [w for w, _ in results["1"]] == [w for w, _ in results["2"]]  # bit for bit
    assert {pid for _, pid in results["1"]} == {os.getpid()}
    assert os.getpid() not in {pid for _, pid in results["2"]}  # the 2-worker run really ran elsewhere
    assert results["1"][0][0] != results["1"][1][0]  # and the seeds matter


def test_worker_pool_delivers_a_workers_forge_error(monkeypatch):
    import pytest

    from forgelib.errors import ForgeError
    from forgelib.runtime import worker_pool

    for workers in ("1", "2"):
        monkeypatch.setenv("FORGE_WORKERS", workers)
        with worker_pool(2) as pool:
            future = pool.submit(_fails, "params.yaml: agents.memory.seeds: expected a list")
            with pytest.raises(ForgeError, match="agents.memory.seeds"):
                future.result()


def test_worker_count_reads_forge_workers(monkeypatch):
    import os

    import pytest

    from forgelib.errors import ForgeError
    from forgelib.runtime import worker_count

    monkeypatch.setenv("FORGE_WORKERS", "3")
    assert worker_count() == 3
    monkeypatch.delenv("FORGE_WORKERS")
    monkeypatch.setenv("FORGE_NUM_THREADS", "1")
    assert worker_count() == (os.cpu_count() or 1)
    monkeypatch.setenv("FORGE_NUM_THREADS", str(2 * (os.cpu_count() or 1)))
    assert worker_count() == 1  # threads already use every core
    for bad in ("0", "two"):
        monkeypatch.setenv("FORGE_WORKERS", bad)
        with pytest.raises(ForgeError, match="FORGE_WORKERS.*integer >= 1"):
            worker_count()


THREAD_PROBE = """
    import torch
    from forgelib.runtime import PIECE_THREADS, stage, worker_count

    @stage{args}
    def main():
        print("torch", torch.get_num_threads(), "workers", worker_count())

    main()
"""


def test_a_loop_stage_gets_two_threads_and_a_stage_with_workers_one_per_process(tmp_path):
    import os

    cpus = os.cpu_count() or 1
    loop = run_script(tmp_path, THREAD_PROBE.format(args=""), env={"PATH": ""})
    assert loop.returncode == 0, loop.stderr
    assert f"torch 2 workers {max(1, cpus // 2)}" in loop.stdout
    assert "2 torch thread(s)" in loop.stderr
    pieces = run_script(tmp_path, THREAD_PROBE.format(args="(threads=PIECE_THREADS)"), env={"PATH": ""})
    assert pieces.returncode == 0, pieces.stderr
    assert f"torch 1 workers {cpus}" in pieces.stdout and "1 torch thread(s)" in pieces.stderr
    override = run_script(tmp_path, THREAD_PROBE.format(args="(threads=PIECE_THREADS)"),
                          env={"PATH": "", "FORGE_NUM_THREADS": "3"})
    assert "torch 3 workers" in override.stdout and "3 torch thread(s)" in override.stderr


def test_a_bad_forge_num_threads_exits_2_naming_the_variable(tmp_path):
    proc = run_script(tmp_path, THREAD_PROBE.format(args=""), env={"PATH": "", "FORGE_NUM_THREADS": "0"})
    assert proc.returncode == 2
    assert "FORGE_NUM_THREADS: expected an integer >= 1, got '0'" in proc.stderr


def test_workers_start_with_the_drivers_thread_count(monkeypatch):
    import torch

    from forgelib.runtime import worker_pool

    monkeypatch.setenv("FORGE_WORKERS", "2")
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with worker_pool(2) as pool:
                assert [f.result() for f in [pool.submit(torch.get_num_threads) for _ in range(2)]] == [threads] * 2
    finally:
        torch.set_num_threads(before)


def test_torchrun_ranks_share_the_stages_threads(monkeypatch):
    import subprocess as sp

    from forgelib.runtime import configure_torch
    from forgelib.train import distributed

    seen = []
    monkeypatch.setattr(sp, "run", lambda cmd, env: seen.append(env) or sp.CompletedProcess(cmd, 0))
    monkeypatch.delenv("FORGE_NUM_THREADS", raising=False)
    configure_torch(2)
    assert distributed.relaunch(2, ["stages/train.py"]) == 0
    assert seen[-1]["FORGE_NUM_THREADS"] == "1"
    monkeypatch.setenv("FORGE_NUM_THREADS", "4")
    distributed.relaunch(2, ["stages/train.py"])
    assert seen[-1]["FORGE_NUM_THREADS"] == "4"  # a value the user set is kept


def test_forge_commands_use_the_thread_count_of_the_stage_they_wrap(monkeypatch):
    import torch
    from typer.testing import CliRunner

    from forgelib.cli import app

    monkeypatch.delenv("FORGE_NUM_THREADS", raising=False)
    for command, threads in (("evo", 1), ("specialize", 1), ("eval", 2), ("training", 2), ("evo", 1)):
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == threads, command
