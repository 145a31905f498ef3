"""The learning-rate schedule of every Forge training loop: linear warmup, then constant or cosine.

Warmup ramps linearly to ``peak`` over ``warmup_steps`` steps (step 0 already trains, at
``peak / warmup_steps``). Cosine decay then follows half a cosine from ``peak`` down to
``FLOOR * peak`` at ``total_steps`` and stays there (Loshchilov & Hutter 2017, "SGDR",
arXiv 1608.03983, without restarts). The base models' SFT loop, the Forge loop and the
grokking bench all call :func:`learning_rate`.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")
FLOOR = 0.1
"""Cosine decay ends at this fraction of the peak rate rather than 0, so late steps still learn."""


def learning_rate(step: int, *, peak: float, warmup_steps: int, total_steps: int, schedule: str = "cosine") -> float:
    """The rate for 0-based ``step``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))
