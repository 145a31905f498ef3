"""The stage decorator: exit code 2 on ForgeError, and one closing line with time and memory."""

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
