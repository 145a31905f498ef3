"""The sandbox contains deletes, sockets, fork bombs and endless loops, and counts them as failures.

Every attack runs under both isolation modes this machine offers. Protected files sit in a
world-writable directory, so when they survive it is the sandbox that protected them, not
ordinary file permissions.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import pytest

from forgelib.errors import ForgeError
from forgelib.eval.sandbox import SandboxConfig, namespace_prefix, run_python

MODES = ["process", pytest.param("namespaces", marks=pytest.mark.skipif(
    namespace_prefix() is None, reason="unshare --net --pid is not available on this machine"))]
FAST = dict(timeout_s=1.5, cpu_s=1, memory_mb=256, max_procs=6)


@pytest.fixture(params=MODES)
def config(request) -> SandboxConfig:
    return SandboxConfig(isolation=request.param, **FAST)


@pytest.fixture
def shared_dir(tmp_path):
    """A directory any user may write to, holding a sentinel file."""
    tmp_path.chmod(0o755)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    sentinel = shared / "sentinel.txt"
    sentinel.write_text("keep me")
    sentinel.chmod(0o666)
    return shared


def _sandbox_processes() -> int:
    """Live processes whose command line names a sandbox temp dir."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                count += b"forge-sandbox-" in handle.read()
        except OSError:
            pass
    return count


def test_a_correct_program_passes_and_may_use_its_own_directory(config):
    source = (
        "import os, shutil, tempfile, collections\n"
        "os.makedirs('a/b')\n"
        "open('a/b/f.txt', 'w').write('x')\n"
        "os.rename('a/b/f.txt', 'a/g.txt')\n"
        "shutil.rmtree('a')\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    open(os.path.join(d, 'h'), 'w').write('y')\n"
        "print(collections.Counter('abca')['a'])\n"
    )
    result = run_python(source, config)
    assert result.status == "passed", result.stderr_tail
    assert result.passed and result.stdout_tail == "2\n"


@pytest.mark.parametrize("source", ["assert 1 == 2", "raise ValueError('no')", "import sys\nsys.exit(0)",
                                    "import os\nos._exit(0)", "def f(:\n"])
def test_errors_and_early_exits_fail(config, source):
    result = run_python(source, config)
    assert result.status == "failed"
    assert not result.passed


@pytest.mark.parametrize("attack", [
    "import os\nos.remove({p!r})",
    "import os\nos.rename({p!r}, 'stolen')",
    "import shutil\nshutil.rmtree({d!r})",
    "open({p!r}, 'w').write('overwritten')",
    "import pathlib\npathlib.Path({p!r}).unlink()",
    "import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.unlink('sentinel.txt', dir_fd=fd)",
    "import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.close(os.open('sentinel.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=fd))",
    "import os\nos.symlink({p!r}, 'link')\nopen('link', 'w').write('through a link')",
    "import os\nos.system('rm -f {p}')",
    "import subprocess\nsubprocess.run(['rm', '-f', {p!r}])",
    "import ctypes\nctypes.CDLL(None).unlink({p!r}.encode())",
])
def test_deleting_or_writing_outside_the_sandbox_fails_and_the_file_survives(config, shared_dir, attack):
    sentinel = shared_dir / "sentinel.txt"
    result = run_python(attack.format(p=str(sentinel), d=str(shared_dir)), config)
    assert result.status == "failed"
    assert "sandbox:" in result.stderr_tail
    assert sentinel.read_text() == "keep me"
    assert sorted(p.name for p in shared_dir.iterdir()) == ["sentinel.txt"]


@pytest.mark.parametrize("attack", [
    "import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('127.0.0.1', {port}))",
    "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
    "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))",
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=1)",
])
def test_opening_a_socket_fails_and_nothing_connects(config, attack):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.3)
        result = run_python(attack.format(port=server.getsockname()[1]), config)
        with pytest.raises(socket.timeout):
            server.accept()
    assert result.status == "failed"


@pytest.mark.skipif(namespace_prefix() is None, reason="unshare --net --pid is not available on this machine")
def test_namespaces_leave_only_a_loopback_interface():
    source = (
        "lines = open('/proc/net/dev').read().splitlines()[2:]\n"
        "names = sorted(line.split(':')[0].strip() for line in lines)\n"
        "assert names == ['lo'], names\n"
        "assert __import__('os').getpid() < 10  # a fresh PID namespace\n"
    )
    result = run_python(source, SandboxConfig(isolation="namespaces", **FAST))
    assert result.status == "passed", result.stderr_tail


@pytest.mark.skipif(os.geteuid() != 0, reason="privileges are only dropped when Forge runs as root")
def test_root_runs_the_program_as_an_unprivileged_user(config):
    result = run_python("import os\nassert os.getuid() != 0 and os.geteuid() != 0\n", config)
    assert result.status == "passed", result.stderr_tail


def test_fork_bomb_is_held_at_the_process_limit_and_cleaned_up(config):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    peak, done = [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _sandbox_processes())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run_python(bomb, config)
    finally:
        done.set()
        watcher.join()
    assert result.status == "timeout"
    assert result.duration_s < config.timeout_s + 1.5
    # max_procs for the sandbox's user, plus the root-owned `unshare` wrapper in namespace mode
    assert 2 <= peak[0] <= config.max_procs + 1
    deadline = time.monotonic() + 2
    while _sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sandbox_processes() == 0
    assert subprocess.run(["true"]).returncode == 0  # the machine can still start processes


def test_endless_loop_times_out_on_the_wall_clock(config):
    result = run_python("import time\nwhile True:\n    time.sleep(0.01)\n", config)
    assert result.status == "timeout"
    assert config.timeout_s <= result.duration_s < config.timeout_s + 1.0


def test_busy_loop_is_stopped_by_the_cpu_limit_before_the_wall_clock(config):
    cpu_bound = SandboxConfig(isolation=config.isolation, timeout_s=30, cpu_s=1, memory_mb=256, max_procs=6)
    result = run_python("while True:\n    pass\n", cpu_bound)
    assert result.status == "timeout"
    # SIGXCPU at 1 s, or SIGKILL at the 2 s hard limit (a PID namespace's init ignores SIGXCPU);
    # either way long before the wall clock, even on a loaded machine.
    assert result.duration_s < cpu_bound.timeout_s / 2


def test_memory_limit_turns_a_huge_allocation_into_a_failure(config):
    result = run_python("x = bytearray(2 * 1024 ** 3)\n", config)
    assert result.status == "failed"
    assert "MemoryError" in result.stderr_tail


@pytest.mark.parametrize("bad", [dict(timeout_s=0), dict(memory_mb=-1), dict(max_procs=1), dict(isolation="docker"),
                                 dict(cpu_s="10")])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ForgeError, match="sandbox\\."):
        SandboxConfig(**bad)
