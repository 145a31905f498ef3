"""Process set-up shared by stage scripts and the CLI.

Torch threads default to 1 (``FORGE_NUM_THREADS`` overrides): the embedded default's models are
so small that extra threads only add synchronisation (measured here: 100 steps took 12.8 s with
1 thread and 113 s with 2 on a loaded 2-core machine), and a fixed thread count keeps float
results, and so model hashes, reproducible.
"""

from __future__ import annotations

import functools
import os


def configure_torch() -> int:
    import torch

    threads = int(os.environ.get("FORGE_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    return threads


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def stage(main):
    """Decorator for stage entry points: configure torch, map ForgeError to exit code 2, and
    end with one stderr line giving the stage's wall time and peak RSS (`dvc repro` shows it)."""
    import sys
    import time

    from forgelib.errors import exit_on_error

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        threads = configure_torch()
        try:  # from process start, so the imports count too
            import psutil

            start = psutil.Process().create_time()
        except Exception:  # psutil is a dvc dependency, but the timing line is not worth a crash
            start = time.time()
        result = main(*args, **kwargs)
        name = os.path.basename(sys.argv[0]).removesuffix(".py")
        extra = " ".join(a for a in sys.argv[1:2] if not a.startswith("-"))
        print(f"[forge] stage {name}{' ' + extra if extra else ''}: {time.time() - start:.1f} s wall, "
              f"peak RSS {peak_rss_bytes() / 2**30:.2f} GiB, {threads} torch thread(s)", file=sys.stderr)
        return result

    return exit_on_error(wrapper)
