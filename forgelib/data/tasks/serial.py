"""Serial-computation tasks: a suite of their own, never part of the headline mean.

``long_add`` is multi-digit addition written most significant digit first, as ``add`` writes it
(``4821+7394=`` -> ``12215``), with operands of exactly ``level + 2`` digits (3 to 6). The first
answer digit depends on the carry chain through every lower column, so emitting it directly
takes serial work that a 2-layer model does in a single pass only by memorising patterns: the
embedded default's merged model (``models/evolved``, trained on 2-digit ``add``) scores 0.0 on
3-digit operands, and plain fine-tuning for a few hundred steps leaves most of the task unsolved
(the quietstar bench reports the figures). It is the task on which the Quiet-STaR stage asks
whether thinking before the answer helps (Zelikman et al. 2024; filler tokens help small
transformers on such tasks only with dense supervision, Pfau et al. 2024).

Leading digits are never zero, so every operand has its level's width and prompts of one level
have one length. Prompt, answer and a thought of the stage's default length fit the models'
64 positions at every level (6 digits: 14 prompt + 7 answer characters).
"""

from __future__ import annotations

import random

from forgelib.data.tasks.base import TaskGenerator

MAX_LEVEL = 4


def digits(level: int) -> int:
    """Operand width at ``level``: 3 digits at level 1, one more per level."""
    return level + 2


def _long_addition() -> TaskGenerator:
    def sample(level: int, rng: random.Random) -> tuple[str, str]:
        lo, hi = 10 ** (digits(level) - 1), 10 ** digits(level)
        prompt = f"{rng.randrange(lo, hi)}+{rng.randrange(lo, hi)}="
        return prompt, answer(prompt)

    def answer(prompt: str) -> str:
        x, y = prompt.rstrip("=").split("+")
        return str(int(x) + int(y))

    def space(level: int) -> int:
        width = 9 * 10 ** (digits(level) - 1)  # operands with a non-zero leading digit
        return width * width

    return TaskGenerator("long_add", "serial", MAX_LEVEL, sample, space, answer)


def serial_generators() -> list[TaskGenerator]:
    return [_long_addition()]
