"""``prepare:`` params: which task generators run, at which difficulty, how many examples per split."""

from __future__ import annotations

from dataclasses import dataclass

from forgelib.configtools import check, doc
from forgelib.data.tasks import TASKS


@dataclass(frozen=True)
class PrepareConfig:
    """The task suite: which generators, at which difficulty, how many examples per split."""

    seed: int = doc("Seed of every generator; the same seed gives byte-identical datasets.", default=0)
    tasks: tuple[str, ...] = doc(
        "Task generators to build (see `forge tasks`).",
        default=("mod_add", "mod_mul", "add", "reverse", "copy", "sort_digits", "parity", "brackets"),
    )
    default_level: int = doc("Difficulty level of tasks not listed in `levels`.", default=2)
    levels: dict[str, int] = doc("Per-task difficulty level override.", default_factory=dict)
    n_train: int = doc("Training examples per task (capped by the level's space).", default=3000)
    n_val: int = doc("Validation examples per task (EvoMerge fitness, early signals).", default=200)
    n_test: int = doc("Test examples per task (reported metrics only).", default=300)
    max_train_fraction: float = doc(
        "When a level has fewer distinct prompts than requested, at most this fraction is train "
        "(0.5 for modular arithmetic, the Grokfast split).",
        default=0.5,
    )
    number_tokens: bool = doc(
        "Tokenizer: every standalone one- or two-digit number is one token (151 tokens instead of "
        "51; longer digit runs stay one token per digit). Off: one token per character.",
        default=False,
    )

    def __post_init__(self):
        for name in self.tasks:
            check(name in TASKS, "tasks", f"task names among {', '.join(TASKS)}", name)
        for name, level in self.levels.items():
            check(name in TASKS, f"levels.{name}", f"a task among {', '.join(TASKS)}", name)
            check(1 <= level <= TASKS[name].max_level, f"levels.{name}", f"a level in 1..{TASKS[name].max_level}", level)
        check(self.default_level >= 1, "default_level", "an integer >= 1", self.default_level)
        for key in ("n_train", "n_val", "n_test"):
            check(getattr(self, key) >= 1, key, "an integer >= 1", getattr(self, key))
        check(0 < self.max_train_fraction < 1, "max_train_fraction", "a float in (0, 1)", self.max_train_fraction)

    def level(self, task: str) -> int:
        """The level ``task`` is generated at (its override, else the default, capped at its maximum)."""
        return min(self.levels.get(task, self.default_level), TASKS[task].max_level)
