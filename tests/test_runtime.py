"""The stage decorator: exit code 2 on ForgeError, and the stage's time and memory in one closing
line and in its metrics JSON."""

import json
import re
import subprocess
import sys
import textwrap


def run_script(tmp_path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script), "arg"], capture_output=True, text=True,
                          env={"FORGE_NUM_THREADS": "1", "PATH": ""})


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
