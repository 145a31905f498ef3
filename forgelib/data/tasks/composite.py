"""Composite tasks: two steps of the suite's tasks applied in a row, kept out of the headline suite.

The ``specialize`` stage's few-shot mixing (Transformer², Sun et al. 2025) adapts to a task that
no expert was trained on. ``sort_reverse`` sorts the digits and then reverses them, i.e. sorts
them in descending order. The order matters: reversing first and then sorting gives the
suite's ``sort_digits`` answer, so an expert that already solves one step does not solve the
composite. Its prefix ``srv`` appears in no suite task. It is never part of ``prepare.tasks``:
the stage generates its examples itself, deterministically from a seed
(:func:`forgelib.data.tasks.registry.generate`).
"""

from __future__ import annotations

import random

from forgelib.data.tasks.base import TaskGenerator

DIGITS = "0123456789"


def _sort_reverse() -> TaskGenerator:
    prefix = "srv"

    def solve(digits: str) -> str:
        return "".join(sorted(digits))[::-1]

    def sample(level: int, rng: random.Random) -> tuple[str, str]:
        # Level L: 2 .. 2 + 2L digits, as the suite's sequence tasks (level 4 fits 64 positions).
        text = "".join(rng.choice(DIGITS) for _ in range(rng.randint(2, 2 + 2 * level)))
        return f"{prefix}:{text}=", solve(text)

    def answer(prompt: str) -> str:
        return solve(prompt[len(prefix) + 1 : -1])

    def space(level: int) -> int:
        return sum(len(DIGITS) ** n for n in range(2, 3 + 2 * level))

    return TaskGenerator("sort_reverse", "composite", 4, sample, space, answer)


def composite_generators() -> list[TaskGenerator]:
    return [_sort_reverse()]
