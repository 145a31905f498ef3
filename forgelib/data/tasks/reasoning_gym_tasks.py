"""Procedural reasoning tasks from the `reasoning-gym` package (the real-model profile).

Each generator draws one item per call from ``reasoning_gym.create_dataset(name, size=1,
seed=...)`` with a seed taken from the caller's RNG, so splits stay deterministic. The prompt is
the question followed by ``"\\nAnswer: "``; the answer is reasoning-gym's reference answer.

Levels map to reasoning-gym's own difficulty settings where the dataset has them
(``basic_arithmetic``: number of terms and digits); ``gsm_symbolic`` has one level.
Verification (``answer_of``) looks the answer up among the prompts this process generated:
reasoning-gym answers are not derivable from the question text alone, and the curriculum and
dream cycles only verify prompts they generated themselves.
"""

from __future__ import annotations

import random

from forgelib.data.tasks.base import TaskGenerator
from forgelib.errors import ForgeError

SUFFIX = "\nAnswer: "

LEVELS = {
    "basic_arithmetic": [
        {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
        {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
        {"min_terms": 3, "max_terms": 4, "min_digits": 1, "max_digits": 3},
    ],
    "gsm_symbolic": [{}],
}


def _reasoning_gym():
    try:
        import reasoning_gym
    except ImportError:
        raise ForgeError("reasoning-gym tasks need the `reasoning-gym` package: pip install -c constraints.txt reasoning-gym") from None
    return reasoning_gym


def _generator(dataset: str, family: str) -> TaskGenerator:
    answers: dict[str, str] = {}

    def sample(level: int, rng: random.Random) -> tuple[str, str]:
        item = next(iter(_reasoning_gym().create_dataset(dataset, size=1, seed=rng.randrange(2**31), **LEVELS[dataset][level - 1])))
        prompt = item["question"].strip() + SUFFIX
        answers[prompt] = str(item["answer"]).strip()
        return prompt, answers[prompt]

    def answer_of(prompt: str) -> str:
        if prompt not in answers:
            raise ForgeError(f"rg_{dataset}: cannot verify a prompt this process did not generate")
        return answers[prompt]

    return TaskGenerator(f"rg_{dataset}", family, len(LEVELS[dataset]), sample, lambda level: None, answer_of)


def reasoning_gym_generators() -> list[TaskGenerator]:
    return [_generator("basic_arithmetic", "rg_arithmetic"), _generator("gsm_symbolic", "rg_word_problems")]
