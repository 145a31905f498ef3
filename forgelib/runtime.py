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


def stage(main):
    """Decorator for stage entry points: configure torch, map ForgeError to exit code 2."""
    from forgelib.errors import exit_on_error

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        configure_torch()
        return main(*args, **kwargs)

    return exit_on_error(wrapper)
