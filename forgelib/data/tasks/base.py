"""The task-generator interface shared by every algorithmic task."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class TaskGenerator:
    """One task: a name, the family it belongs to, and a sampler per difficulty level.

    ``sample(level, rng)`` returns ``(prompt, answer)``. ``space(level)`` is the number of
    distinct prompts at that level when it is small enough to enumerate (``None`` otherwise);
    split building uses it to cap sizes so train/validation/test never overlap.
    """

    name: str
    family: str
    max_level: int
    sample: Callable[[int, random.Random], tuple[str, str]]
    space: Callable[[int], int | None]
    answer_of: Callable[[str], str]
    """Recompute the answer from a prompt: the verifier used by curriculum and dreams."""

    def max_answer_chars(self, level: int) -> int:
        """An upper bound on the answer length at ``level`` (sizes generation budgets)."""
        rng = random.Random(0)
        return max(len(self.sample(level, rng)[1]) for _ in range(256)) + 2

    def check(self, prompt: str, answer: str) -> bool:
        return self.answer_of(prompt) == answer
