"""Grokfast controller: filters the model's gradients after ``backward()`` (arXiv 2405.20233).

``filter="ema"`` or ``"ma"`` rewrites each parameter's ``.grad`` with the pure filters of
:mod:`forgelib.train.grokfast` in ``after_backward``. ``filter="ema_fused"`` leaves the gradients
alone: the loop then builds a :class:`~forgelib.train.grokfast.GrokfastAdamW`, and this controller
only keeps the optimizer's λ in step with its own (which the λ scheduler may change).
"""

from __future__ import annotations

from forgelib.train.controllers.base import Controller, LoopContext
from forgelib.train.grokfast import apply_grad_filter_, gradfilter_ema, gradfilter_ma


class GrokfastController(Controller):
    name = "grokfast"

    def __init__(self, *, filter: str, alpha: float, lamb: float, window_size: int, warmup: bool):
        self.filter, self.alpha, self.lamb = filter, alpha, lamb
        self.window_size, self.warmup = window_size, warmup
        self.filter_state: dict = {}

    def after_backward(self, ctx: LoopContext, step: int) -> None:
        if self.filter == "ema":
            self.filter_state = apply_grad_filter_(
                ctx.model, gradfilter_ema, self.filter_state, alpha=self.alpha, lamb=self.lamb)
        elif self.filter == "ma":
            self.filter_state = apply_grad_filter_(
                ctx.model, gradfilter_ma, self.filter_state,
                window_size=self.window_size, lamb=self.lamb, warmup=self.warmup)
        else:  # ema_fused: GrokfastAdamW filters inside step(); only the model's group is filtered
            for group in ctx.optimizer.param_groups:
                if group.get("name") == "model":
                    group["lamb"] = self.lamb

    def metrics(self) -> dict[str, float]:
        return {"grokfast/lamb": float(self.lamb)}

    def state_dict(self) -> dict:
        return {"lamb": self.lamb, "filter_state": self.filter_state}

    def load_state_dict(self, state: dict) -> None:
        self.lamb = float(state["lamb"])
        self.filter_state = state["filter_state"]
