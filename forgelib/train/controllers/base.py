"""The controller protocol of the Forge loop, and the context its hooks receive.

A controller is a small object that watches or steers training through named hooks. Each hook
runs at one fixed point of :func:`forgelib.train.forge_loop.train_model`'s step:

1. ``on_batch(ctx, step, plan)``: before the batch is drawn; may set ``plan.levels`` (family ->
   difficulty level) to choose what is sampled (edge curriculum, temperature schedule).
2. ``aux_loss(ctx, batch, outputs)``: after the forward pass; returns a scalar added to the task
   loss before ``backward()``, or ``None`` (self-model head).
3. ``after_backward(ctx, step)``: after ``backward()``, before clipping and ``optimizer.step()``;
   the one place gradients may be rewritten (Grokfast filters).
4. ``on_step_end(ctx, step, rows, stats)``: after ``optimizer.step()``, with the batch rows and
   their per-example :class:`~forgelib.eval.scoring.AnswerScores` (curriculum bookkeeping,
   hard-example buffer, geometry probes, dream phases).
5. ``on_eval(ctx, step, metrics)``: after each in-loop evaluation (λ schedule, grokking stage).

``metrics()`` returns the scalars to log; ``state_dict()`` / ``load_state_dict()`` round-trip
everything needed to resume (tensors allowed, nested in dicts and lists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class BatchPlan:
    """What the next batch should contain; controllers fill it in ``on_batch``."""

    levels: dict[str, int] | None = None


@dataclass
class LoopContext:
    """Everything a hook may need, owned by the loop."""

    model: torch.nn.Module
    tokenizer: Any
    stream: Any
    """The :class:`~forgelib.train.task_stream.TaskStream` batches come from."""
    optimizer: torch.optim.Optimizer | None = None
    optimize: Callable[[list[dict]], Any] | None = None
    """One optimizer step on given rows (forward, aux losses, backward, filters, step)."""
    seed: int = 0
    max_steps: int = 1
    step: int = 0
    """Index of the step in progress (0-based)."""
    controllers: dict[str, "Controller"] = field(default_factory=dict)
    length_groups: int = 1
    """Forward passes per step, rows grouped by length (``train.length_groups``)."""


class Controller:
    """Base class: every hook is a no-op, so a controller overrides only what it uses."""

    name = "controller"
    wants_hidden_states = False
    """True if ``aux_loss`` needs ``outputs.hidden_states`` from the training forward pass."""

    def on_batch(self, ctx: LoopContext, step: int, plan: BatchPlan) -> None:
        pass

    def aux_loss(self, ctx: LoopContext, batch: dict, outputs) -> torch.Tensor | None:
        return None

    def after_backward(self, ctx: LoopContext, step: int) -> None:
        pass

    def on_step_end(self, ctx: LoopContext, step: int, rows: list[dict], stats) -> None:
        pass

    def on_eval(self, ctx: LoopContext, step: int, metrics: dict) -> None:
        pass

    def parameters(self) -> list[torch.nn.Parameter]:
        """Extra trainable parameters the optimizer must own (not part of the saved model)."""
        return []

    def metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
