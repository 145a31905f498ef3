"""The evomerge fitness: mean exact match over all task families on the validation split.

A small picklable spec (data dir, example limit) rather than a closure over loaded tasks, so the
``process`` and ``ray`` backends can ship it to workers; each worker process loads the validation
tasks once (:func:`_tasks` is cached per process) and then scores every candidate it is given.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from forgelib.data.tasks import load_tasks
from forgelib.eval.evaluate import fast_mean_exact_match
from forgelib.models.hf import load_model


@functools.lru_cache(maxsize=4)
def _tasks(data_dir: str):
    return load_tasks(data_dir)


@dataclass(frozen=True)
class ValidationFitness:
    """``fitness(model_dir)``: validation exact match (``forced_exact_match``), mean over families."""

    data_dir: str
    limit: int | None
    """Validation examples per task (``evomerge.fitness_limit``; None: the whole split)."""

    def __call__(self, model_dir: Path) -> float:
        model, tokenizer = load_model(model_dir)
        return fast_mean_exact_match(model, tokenizer, _tasks(self.data_dir), split="validation",
                                     limit=self.limit)["mean"]
