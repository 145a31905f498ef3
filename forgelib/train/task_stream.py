"""Where the Forge loop's training examples come from, step by step.

A batch is a pure function of ``(seed, step, levels)``: no iterator state, so a resumed run draws
exactly the batches an uninterrupted run would. Each example picks a task uniformly (tasks of
very different sizes are seen equally often, or as often as ``weights`` say), then a row:

- ``source="split"``: a row of the task's prepared train split, at the task family's current
  curriculum level (the nearest level present) or at any level when no curriculum runs.
- ``source="generate"``: a fresh example from the task's generator
  (:func:`forgelib.data.tasks.generate`) at the family's curriculum level (any level from 1 to
  the generator's ``max_level``), or, without curriculum, at a level drawn from those present in
  the task's train split (the prepared data's distribution, fresh samples). Validation and test
  prompts are excluded, so held-out numbers stay held out.
"""

from __future__ import annotations

import random
import zlib
from typing import Mapping

from forgelib.data.batching import collate, encode
from forgelib.data.tasks import TASKS, generate
from forgelib.errors import ForgeError

ROW_KEYS = ("task", "family", "level", "prompt", "answer")


def _rows(split) -> list[dict]:
    columns = split[:]  # column access: far faster than iterating a datasets.Dataset row by row
    return [dict(zip(ROW_KEYS, values)) for values in zip(*(columns[k] for k in ROW_KEYS))]


class TaskStream:
    def __init__(self, tasks: Mapping, tokenizer, *, seed: int, source: str = "split",
                 weights: Mapping[str, float] | None = None):
        if not tasks:
            raise ForgeError("train: no task datasets given; run `dvc repro prepare` or pass --data")
        unknown = sorted(set(weights or {}) - set(tasks))
        if unknown:
            raise ForgeError(f"train.task_weights: {unknown[0]!r} is not a prepared task; "
                             f"tasks: {', '.join(sorted(tasks))}")
        self.tokenizer, self.seed, self.source = tokenizer, seed, source
        self.weights = dict(weights or {})
        self.train = {name: _rows(splits["train"]) for name, splits in tasks.items()}
        self.task_names = sorted(self.train)
        self.family_of = {name: rows[0]["family"] for name, rows in self.train.items() if rows}
        self.by_level: dict[str, dict[int, list[dict]]] = {}
        for name, rows in self.train.items():
            for row in rows:
                self.by_level.setdefault(name, {}).setdefault(row["level"], []).append(row)
        self.heldout: dict[str, set[str]] = {}
        if source == "generate":
            unknown = [name for name in self.task_names if name not in TASKS]
            if unknown:
                raise ForgeError(f"train.source: generate needs registered task generators; "
                                 f"{unknown[0]!r} has none (use source: split)")
            for name, splits in tasks.items():
                self.heldout[name] = {p for s in ("validation", "test") if s in splits for p in splits[s]["prompt"]}
        self._encoded: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def families(self) -> list[str]:
        return sorted(set(self.family_of.values()))

    def level_range(self, family: str) -> tuple[int, int]:
        names = [n for n in self.task_names if self.family_of.get(n) == family]
        if self.source == "generate":
            return 1, max(TASKS[n].max_level for n in names)
        levels = [lv for n in names for lv in self.by_level.get(n, {})]
        return min(levels), max(levels)

    def sample(self, step: int, batch_size: int, levels: Mapping[str, int] | None = None,
               salt: str = "train") -> list[dict]:
        """``batch_size`` examples for ``step``; ``levels`` maps family -> curriculum level.

        ``salt`` names an independent stream (the dream cycles draw their prompts with their own).
        """
        rng = random.Random(f"{self.seed}:{salt}:{step}")
        names = [n for n in self.task_names if self.train[n] or self.source == "generate"]
        if self.weights:
            picks = rng.choices(names, weights=[self.weights.get(n, 1.0) for n in names], k=batch_size)
        else:  # rng.choice, as before task weights existed: the same seed draws the same batches
            picks = [rng.choice(names) for _ in range(batch_size)]
        if self.source == "generate":
            return self._generated(rng, step, picks, levels, salt)
        rows = []
        for name in picks:
            pool = self.train[name]
            if levels is not None:
                available = self.by_level[name]
                wanted = levels[self.family_of[name]]
                pool = available[min(available, key=lambda lv: (abs(lv - wanted), lv))]
            rows.append(rng.choice(pool))
        return rows

    def _generated(self, rng: random.Random, step: int, picks: list[str], levels, salt: str) -> list[dict]:
        counts: dict[tuple[str, int], int] = {}
        for name in picks:
            if levels is not None:
                level = min(levels[self.family_of[name]], TASKS[name].max_level)
            else:
                level = rng.choice(sorted(self.by_level.get(name, {1: None})))
            counts[(name, level)] = counts.get((name, level), 0) + 1
        rows = []
        for (name, level), n in sorted(counts.items()):
            rows += generate(name, level, n, seed=zlib.crc32(f"{self.seed}:{salt}:{step}".encode()), exclude=self.heldout[name])
        rng.shuffle(rows)
        return rows

    def collate(self, rows: list[dict]) -> dict:
        """Encode (cached per prompt) and right-pad ``rows`` into one batch."""
        encoded = []
        for row in rows:
            key = (row["prompt"], row["answer"])
            if key in self._encoded:
                encoded.append(self._encoded[key])
                continue
            encoded.append(encode(self.tokenizer, row["prompt"], row["answer"]))
            if self.source == "split":  # generated prompts rarely repeat: caching them only grows
                self._encoded[key] = encoded[-1]
        return collate(encoded, self.tokenizer.pad_token_id)
