"""Deterministic generators for classic algorithmic tasks, with difficulty levels.

Every task is a :class:`TaskGenerator` listed in :mod:`forgelib.data.tasks.registry`. A
generator turns ``(level, rng)`` into one ``(prompt, answer)`` pair; the answer is computed, not
looked up, so the same generator verifies a model's output (``check``) for the curriculum and the
dream cycles. Difficulty levels run from 1 (easiest) to ``max_level``.
"""

from forgelib.data.tasks.base import TaskGenerator
from forgelib.data.tasks.registry import TASKS, families, generate, get_task, load_tasks

__all__ = ["TASKS", "TaskGenerator", "families", "generate", "get_task", "load_tasks"]
