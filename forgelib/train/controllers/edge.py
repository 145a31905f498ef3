"""Edge-of-chaos curriculum: keep each task family's success rate inside a target band.

Success is measured, not assumed: every training example's outcome is greedy exact match,
read off the training forward pass (all answer tokens argmax-correct under teacher forcing, see
:mod:`forgelib.eval.scoring`). Per family the controller keeps the last ``window`` outcomes
at the current level. Every ``update_every`` steps, a family with at least ``min_samples``
outcomes moves one level up if its success rate is above the band (too easy), one level down
if below (too hard), and stays inside the band. A move clears the family's window, so the next
decision is made on outcomes at the new level only.

The 55-75% band is a heuristic of the original system without a published source; the nearest
published result is the "85% rule" (Wilson et al., Nat. Commun. 2019). It is a param so its
effect can be measured (bench/ablations.py).
"""

from __future__ import annotations

from collections import deque

from forgelib.train.controllers.base import BatchPlan, Controller, LoopContext


def next_level(level: int, success: float, *, band: tuple[float, float], lowest: int, highest: int) -> int:
    """One curriculum decision: up when too easy, down when too hard, clamped to the range."""
    low, high = band
    if success > high:
        return min(level + 1, highest)
    if success < low:
        return max(level - 1, lowest)
    return level


class EdgeCurriculum(Controller):
    name = "edge"

    def __init__(self, *, level_ranges: dict[str, tuple[int, int]], band: tuple[float, float],
                 window: int, min_samples: int, update_every: int, start_level: int | None = None):
        self.ranges, self.band = dict(level_ranges), tuple(band)
        self.window, self.min_samples, self.update_every = window, min_samples, update_every
        self.levels = {fam: min(max(start_level if start_level is not None else lo, lo), hi)
                       for fam, (lo, hi) in self.ranges.items()}
        self.recent = {fam: deque(maxlen=window) for fam in self.ranges}

    def on_batch(self, ctx: LoopContext, step: int, plan: BatchPlan) -> None:
        plan.levels = dict(self.levels)

    def on_step_end(self, ctx: LoopContext, step: int, rows: list[dict], stats) -> None:
        self.record([row["family"] for row in rows], stats.correct.tolist())
        if (step + 1) % self.update_every == 0:
            self.update()

    def record(self, families: list[str], outcomes: list[bool]) -> None:
        for family, ok in zip(families, outcomes):
            if family in self.recent:
                self.recent[family].append(bool(ok))

    def success_rate(self, family: str) -> float | None:
        outcomes = self.recent[family]
        return sum(outcomes) / len(outcomes) if len(outcomes) >= self.min_samples else None

    def update(self) -> None:
        for family, (lowest, highest) in self.ranges.items():
            rate = self.success_rate(family)
            if rate is None:
                continue
            new = next_level(self.levels[family], rate, band=self.band, lowest=lowest, highest=highest)
            if new != self.levels[family]:
                self.levels[family] = new
                self.recent[family].clear()

    def metrics(self) -> dict[str, float]:
        out = {f"edge/level/{fam}": float(level) for fam, level in self.levels.items()}
        for family in self.ranges:
            rate = self.success_rate(family)
            if rate is not None:
                out[f"edge/success/{family}"] = rate
        return out

    def state_dict(self) -> dict:
        return {"levels": dict(self.levels), "recent": {f: list(v) for f, v in self.recent.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.levels = {f: int(v) for f, v in state["levels"].items()}
        self.recent = {f: deque(state["recent"].get(f, []), maxlen=self.window) for f in self.ranges}
