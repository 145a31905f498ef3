"""Grokfast: accelerated grokking by amplifying slow gradients (Lee et al., arXiv 2405.20233).

A parameter's gradient sequence is treated as a signal over training steps. Its slow (low
frequency) component drives generalisation; Grokfast adds an amplified low-pass copy of it to the
gradient before the optimizer step:

- EMA filter: ``mu = alpha * mu + (1 - alpha) * g``, then ``g_hat = g + lamb * mu``.
  ``mu`` starts at the parameter's first gradient, so the first filtered step is
  ``(1 + lamb) * g``, as in the reference code.
- MA filter: ``g_hat = g + lamb * mean(last window_size gradients)``, the window including the
  current gradient, applied once the window is full (``warmup=True``).

The filters are pure: they take a ``{name: grad}`` mapping and the filter state and return new
filtered gradients and a new state, never touching ``.data``. Parameters absent from ``grads``
(no gradient this step) keep their state; a parameter that first receives a gradient late starts
its own ``mu`` (or window) at that first gradient. The one hook point is between ``backward()``
and ``optimizer.step()`` (:func:`apply_grad_filter_`), or inside :class:`GrokfastAdamW`.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor, nn

EMA_ALPHA = 0.98
EMA_LAMB = 2.0
MA_WINDOW = 100
MA_LAMB = 5.0


def gradfilter_ema(
    grads: Mapping[str, Tensor],
    ema_state: Mapping[str, Tensor],
    *,
    alpha: float = EMA_ALPHA,
    lamb: float = EMA_LAMB,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One EMA-filter step: returns ``(filtered_grads, new_state)``; inputs are not modified."""
    new_state = dict(ema_state)
    filtered = {}
    for name, grad in grads.items():
        grad = grad.detach()
        previous = ema_state.get(name)
        mu = grad.clone() if previous is None else alpha * previous + (1.0 - alpha) * grad
        new_state[name] = mu
        filtered[name] = grad + lamb * mu
    return filtered, new_state


def gradfilter_ma(
    grads: Mapping[str, Tensor],
    window_state: Mapping[str, dict],
    *,
    window_size: int = MA_WINDOW,
    lamb: float = MA_LAMB,
    warmup: bool = True,
) -> tuple[dict[str, Tensor], dict[str, dict]]:
    """One MA-filter step: returns ``(filtered_grads, new_state)``; inputs are not modified.

    A parameter's state is ``{"window": [g_oldest, ..., g_newest], "sum": sum(window)}``. The
    running sum makes a step O(1) in the window size instead of re-adding ``window_size``
    tensors; with ``warmup=False`` the mean of a partly filled window is applied from step one.
    """
    new_state = dict(window_state)
    filtered = {}
    for name, grad in grads.items():
        grad = grad.detach()
        previous = window_state.get(name)
        if previous is None:
            window, total = [grad.clone()], grad.clone()
        else:
            window, total = previous["window"] + [grad.clone()], previous["sum"] + grad
            if len(window) > window_size:
                total = total - window[0]
                window = window[1:]
        new_state[name] = {"window": window, "sum": total}
        if warmup and len(window) < window_size:
            filtered[name] = grad
        else:
            filtered[name] = grad + lamb * (total / len(window))
    return filtered, new_state


def apply_grad_filter_(
    model: nn.Module,
    grad_filter: Callable[..., tuple[dict[str, Tensor], dict]],
    state: Mapping,
    **filter_kwargs,
) -> dict:
    """Replace each parameter's ``.grad`` by its filtered gradient; returns the new filter state.

    Call between ``loss.backward()`` and ``optimizer.step()``. Only ``.grad`` is rebound; the
    parameter values are untouched.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    filtered, new_state = grad_filter({n: p.grad for n, p in params.items()}, state, **filter_kwargs)
    for name, param in params.items():
        param.grad = filtered[name]
    return new_state


class GrokfastAdamW(torch.optim.AdamW):
    """AdamW whose step first applies the Grokfast EMA filter to each gradient.

    Equal, step for step, to ``gradfilter_ema`` followed by ``torch.optim.AdamW`` with the same
    hyperparameters: the filter state ``mu`` lives in the optimizer state (``grokfast_mu``), so it
    is saved and restored with ``state_dict()``. ``alpha`` and ``lamb`` are per param group and
    may be changed between steps (the λ scheduler does).
    """

    def __init__(self, params, *, alpha: float = EMA_ALPHA, lamb: float = EMA_LAMB, **adamw_kwargs):
        super().__init__(params, **adamw_kwargs)
        self.defaults.update(alpha=alpha, lamb=lamb)
        for group in self.param_groups:
            group.setdefault("alpha", alpha)
            group.setdefault("lamb", lamb)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        new_mus = []
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                previous = self.state[param].get("grokfast_mu") if param in self.state else None
                if previous is None:
                    mu = param.grad.clone()
                else:
                    mu = group["alpha"] * previous + (1.0 - group["alpha"]) * param.grad
                param.grad = param.grad + group["lamb"] * mu
                new_mus.append((param, mu))
        super().step()
        # AdamW initialises a parameter's moments only while its state is empty, so mu is stored
        # after the AdamW step.
        for param, mu in new_mus:
            self.state[param]["grokfast_mu"] = mu
        return loss
