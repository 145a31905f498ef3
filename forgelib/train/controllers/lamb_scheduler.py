"""λ scheduler for Grokfast, driven by the measured train-validation accuracy gap.

The rule, applied at every in-loop evaluation with ``gap = train_acc - val_acc``:

- ``gap >= gap_high``: the model fits its training data but does not generalise (the memorising
  phase grokking starts from). Grokfast's claim is that amplifying the slow gradient component
  shortens this phase, so λ is multiplied by ``factor``.
- ``gap <= gap_low``: the model generalises; a large λ now only inflates the effective step
  size (g + λ·mu is up to (1 + λ) times the gradient), so λ is divided by ``factor``.
- otherwise λ is left alone. λ stays within [lamb_min, lamb_max].

The rule is ours: the paper uses a fixed λ. Measure it before relying on it. λ itself belongs to
the Grokfast controller; this one only computes the next value and hands it over (``set_lamb``).
"""

from __future__ import annotations

from forgelib.train.controllers.base import Controller, LoopContext


def next_lamb(lamb: float, gap: float, *, gap_high: float, gap_low: float, factor: float,
              lamb_min: float, lamb_max: float) -> float:
    if gap >= gap_high:
        lamb = lamb * factor
    elif gap <= gap_low:
        lamb = lamb / factor
    return min(max(lamb, lamb_min), lamb_max)


class LambScheduler(Controller):
    name = "lamb_schedule"

    def __init__(self, *, gap_high: float, gap_low: float, factor: float, lamb_min: float, lamb_max: float):
        self.rule = dict(gap_high=gap_high, gap_low=gap_low, factor=factor, lamb_min=lamb_min, lamb_max=lamb_max)
        self.last_gap: float | None = None

    def on_eval(self, ctx: LoopContext, step: int, metrics: dict) -> None:
        grokfast = ctx.controllers["grokfast"]
        self.last_gap = metrics["train_acc"] - metrics["val_acc"]
        grokfast.set_lamb(next_lamb(grokfast.lamb, self.last_gap, **self.rule))

    def metrics(self) -> dict[str, float]:
        return {} if self.last_gap is None else {"grokfast/gap": self.last_gap}

    def state_dict(self) -> dict:
        return {"last_gap": self.last_gap}

    def load_state_dict(self, state: dict) -> None:
        self.last_gap = state["last_gap"]
