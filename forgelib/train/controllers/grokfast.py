"""Grokfast controller: filters the model's gradients after ``backward()`` (arXiv 2405.20233).

``filter="ema"`` or ``"ma"`` rewrites each parameter's ``.grad`` with the pure filters of
:mod:`forgelib.train.grokfast` in ``after_backward``. ``filter="ema_fused"`` leaves the gradients
alone: the loop then builds a :class:`~forgelib.train.grokfast.GrokfastAdamW`, and this controller
only keeps the optimizer's λ in step with its own.

This controller is the one owner of λ at run time. It starts from ``train.grokfast.lamb`` (the
config is not read again), the λ scheduler changes it through :meth:`GrokfastController.set_lamb`,
it is checkpointed in this controller's state, and with ``ema_fused`` it is copied into the
optimizer's model group before every step (``GrokfastAdamW`` reads λ per param group).
"""

from __future__ import annotations

from forgelib.train.controllers.base import Controller, LoopContext
from forgelib.train.grokfast import apply_grad_filter_, gradfilter_ema, gradfilter_ma


class GrokfastController(Controller):
    name = "grokfast"

    def __init__(self, *, filter: str, alpha: float, lamb: float, window_size: int, warmup: bool):
        self.filter, self.alpha, self._lamb = filter, alpha, float(lamb)
        self.window_size, self.warmup = window_size, warmup
        self.filter_state: dict = {}

    @property
    def lamb(self) -> float:
        """The amplification λ of the current step."""
        return self._lamb

    def set_lamb(self, lamb: float) -> None:
        """Change λ from the next step on (the λ scheduler's hook into this controller)."""
        self._lamb = float(lamb)

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
        self._lamb = float(state["lamb"])
        self.filter_state = state["filter_state"]
