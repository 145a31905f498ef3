"""Process set-up shared by stage scripts and the CLI.

Torch threads: ``FORGE_NUM_THREADS`` when set, else the process's default. A stage that runs one
loop at a time (ancestor, specialist, base, train, compress, deploy, humaneval) uses 2 threads; a
stage that spreads independent pieces over worker processes (evomerge, quietstar, specialize,
agents) gives every process 1. The count is fixed rather than "every core" so float results, and
so model hashes, are the same on any machine with the same kind of CPU. Measured on the 2-core
Xeon (stage walls of the same work): the ancestor took 84 s on 1 thread and 38 s on 2, the three
specialists 460 s and 221 s. The worker stages keep 1 thread per process because their pieces
already occupy both cores: quietstar took 97 s in 2 one-thread workers and 134 s in one 2-thread
process. On a machine busy with other work, extra threads only add
synchronisation (100 steps once took 12.8 s on 1 thread and 113 s on 2 on a loaded 2-core
machine): set ``FORGE_NUM_THREADS=1`` there, knowing that results then differ in their last bits
from the committed run's.

The other cores go to independent pieces of work inside a stage (memory seeds, SVF families,
Quiet-STaR arms): :func:`worker_pool` runs them in spawn-context worker processes, as many as
``FORGE_WORKERS`` (default: CPUs // torch threads). Each worker runs torch with the same thread
count and each piece seeds itself, so a result never depends on the number of workers
(``FORGE_WORKERS=1`` runs every piece in the stage's own process).
"""

from __future__ import annotations

import contextlib
import functools
import os
from concurrent.futures import Executor, Future


LOOP_THREADS = 2
"""Torch threads of a process that runs one loop at a time (a stage's, the CLI's, a bench's)."""
PIECE_THREADS = 1
"""Torch threads of each process of a stage that spreads independent pieces over processes."""

_default_threads = LOOP_THREADS


def _positive_env(name: str, default: int, unset_hint: str) -> int:
    """The integer environment variable ``name`` (>= 1), or ``default`` when it is unset; any
    other value is a ForgeError naming the variable and what unsetting it gives."""
    from forgelib.errors import ForgeError

    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ForgeError(f"environment variable {name}: expected an integer >= 1, got {raw!r}; unset it {unset_hint}")
    return value


def torch_threads() -> int:
    """This process's torch thread count: ``FORGE_NUM_THREADS``, else the default
    :func:`configure_torch` set (:data:`LOOP_THREADS` until then). Workers inherit it."""
    return _positive_env("FORGE_NUM_THREADS", _default_threads,
                         f"for the default ({LOOP_THREADS} in a single-loop stage, {PIECE_THREADS} per process in a "
                         "stage with worker processes)")


def configure_torch(default: int = LOOP_THREADS) -> int:
    """Set torch's thread count (``FORGE_NUM_THREADS``, else ``default``) and return it."""
    import torch

    global _default_threads
    _default_threads = default
    threads = torch_threads()
    torch.set_num_threads(threads)
    return threads


def worker_count() -> int:
    """Worker processes of :func:`worker_pool`: ``FORGE_WORKERS``, default CPUs // torch threads (>= 1)."""
    return _positive_env("FORGE_WORKERS", max(1, (os.cpu_count() or 1) // max(1, torch_threads())),
                         "to use one worker per CPU")


def prepare_worker(cwd: str, threads: int) -> None:
    """Start-up of a worker process: the driver's working directory (paths are relative to it)
    and its torch thread count."""
    import torch

    os.chdir(cwd)
    torch.set_num_threads(threads)


def spawn_pool(workers: int):
    """A spawn-context ``ProcessPoolExecutor`` of ``workers`` processes, each started in this
    process's working directory with its current torch thread count (:func:`prepare_worker`), so
    a piece computes the same floats in a worker as in this process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=prepare_worker, initargs=(os.getcwd(), torch.get_num_threads()))


class InlineExecutor(Executor):
    """Runs each submitted call at once, in this process; its future is already done."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # delivered by future.result(), as a pool would
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def worker_pool(tasks: int):
    """An executor for ``tasks`` independent calls: a spawn-context process pool of
    ``min(worker_count(), tasks)`` workers (see the module doc), or, with one worker, an
    :class:`InlineExecutor`. Submitted functions and arguments must be picklable (module-level
    functions); each call must seed what it draws, so its result does not depend on where it ran.
    On leaving, pending calls are cancelled if the block raised, else awaited."""
    workers = min(worker_count(), max(1, tasks))
    if workers == 1:
        yield InlineExecutor()
        return
    pool = spawn_pool(workers)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def peak_rss_bytes() -> int:
    """The peak resident set size of this process or of its largest finished child (a worker of
    :func:`worker_pool`); Linux reports ru_maxrss in KiB, macOS in bytes."""
    import resource
    import sys

    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return peak if sys.platform == "darwin" else peak * 1024


COST_KEYS = ("wall_s", "peak_rss_gib")
"""What :func:`stage` adds to a stage's metrics JSON: `forge analyze` and `dvc metrics diff` read them."""


def record_cost(metrics_path: str | os.PathLike, *, wall_s: float, peak_rss_gib: float) -> None:
    """Add ``wall_s`` and ``peak_rss_gib`` to the metrics JSON at ``metrics_path`` (atomically;
    created when the stage wrote none), keeping every key already there."""
    from forgelib.io import read_json, write_json

    metrics = read_json(metrics_path) if os.path.isfile(metrics_path) else {}
    metrics.update(wall_s=round(wall_s, 2), peak_rss_gib=round(peak_rss_gib, 3))
    write_json(metrics_path, metrics)


def stage(main=None, *, threads: int = LOOP_THREADS):
    """Decorator for stage entry points: configure torch (``threads`` unless ``FORGE_NUM_THREADS``
    says otherwise; ``@stage(threads=PIECE_THREADS)`` for a stage with worker processes), map
    ForgeError to exit code 2, and record what the stage cost. Its wall time (from process start,
    so imports count) and peak RSS go to one stderr line (`dvc repro` shows it) and, when ``main`` returns the path of the
    stage's metrics JSON, into that file as ``wall_s`` and ``peak_rss_gib`` once ``main`` has
    succeeded. A stage without a metrics file returns None."""
    import sys
    import time

    from forgelib.errors import exit_on_error

    if main is None:
        return functools.partial(stage, threads=threads)

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        configured = configure_torch(threads)
        try:  # from process start, so the imports count too
            import psutil

            start = psutil.Process().create_time()
        except Exception:  # psutil is a dvc dependency, but the timing line is not worth a crash
            start = time.time()
        metrics_path = main(*args, **kwargs)
        wall_s, peak_rss_gib = time.time() - start, peak_rss_bytes() / 2**30
        if metrics_path is not None:
            record_cost(metrics_path, wall_s=wall_s, peak_rss_gib=peak_rss_gib)
        name = os.path.basename(sys.argv[0]).removesuffix(".py")
        extra = " ".join(a for a in sys.argv[1:2] if not a.startswith("-"))
        print(f"[forge] stage {name}{' ' + extra if extra else ''}: {wall_s:.1f} s wall, "
              f"peak RSS {peak_rss_gib:.2f} GiB, {configured} torch thread(s)", file=sys.stderr)
        return metrics_path

    return exit_on_error(wrapper)
