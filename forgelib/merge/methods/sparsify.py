"""Sparsifying a task vector ``delta = W_model - W_base``: the trim step of TIES, DARE, Model
Breadcrumbs and DELLA.

- ``magnitude`` (TIES, arXiv 2306.01708): keep the ``k = int(density * numel)`` largest |delta|.
- ``random_drop`` (DARE, arXiv 2311.03099): drop each element with probability ``p = 1 - density``
  and rescale the survivors by ``1 / (1 - p)`` so the expected delta is unchanged.
- ``magnitude_outliers`` (Model Breadcrumbs, arXiv 2312.06795): drop the ``gamma`` fraction with
  the largest |delta| and enough of the smallest to keep ``density``.
- ``rank_sampling`` (DELLA, arXiv 2406.11617): within each row, keep probabilities rise linearly
  with the magnitude rank from ``density - epsilon`` to ``density + epsilon``; survivors are
  rescaled by ``1 / p_i``.

The deterministic ones (magnitude, magnitude_outliers, with or without ``rescale``) give the
same tensors as mergekit 0.1.5 (checked tensor for tensor on tiny Llamas); ties in |delta| are
broken as a stable sort would, so results do not depend on a sort kernel.

Deviation, on purpose: ``rescale`` for DARE and DELLA divides each survivor by its keep
probability, as both papers do; mergekit 0.1.x instead rescales the survivors to the original L1
norm (equal in expectation). Both are random, so neither could be matched bit for bit anyway
(masks come from different generators). For the deterministic methods ``rescale: true`` is
mergekit's L1-norm match.
"""

from __future__ import annotations

import torch

from forgelib.errors import ForgeError


def _l1_rescaled(delta: torch.Tensor, kept: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """mergekit's ``rescale`` for deterministic masks: match the L1 norm of the unmasked delta."""
    before, after = delta.abs().sum(), kept.abs().sum()
    if before < eps or after < eps:
        return kept
    return kept * (before / after)


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` largest entries of a 1-D tensor, the set a stable descending sort
    puts first (equal scores at the cut: lower indices win). ``kthvalue`` finds the cut in
    linear time, ~10x faster than sorting a large tensor."""
    n = scores.numel()
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool)
    if k >= n:
        return torch.ones(n, dtype=torch.bool)
    threshold = torch.kthvalue(scores, n - k + 1).values  # the k-th largest
    mask = scores > threshold
    at_cut = (scores == threshold).nonzero().squeeze(1)
    mask[at_cut[: k - int(mask.sum())]] = True
    return mask


def magnitude(delta: torch.Tensor, density: float, *, rescale: bool = False) -> torch.Tensor:
    """Keep the top ``int(density * numel)`` entries by |delta| (TIES "trim")."""
    if density >= 1:
        return delta
    flat = delta.reshape(-1)
    mask = top_k_mask(flat.abs(), int(density * flat.numel()))
    kept = (flat * mask).reshape(delta.shape)
    return _l1_rescaled(delta, kept) if rescale else kept


def magnitude_outliers(
    delta: torch.Tensor, density: float, gamma: float, *, rescale: bool = False
) -> torch.Tensor:
    """Drop the largest ``gamma`` fraction and smallest ``1 - density - gamma`` (Breadcrumbs)."""
    if density >= 1:
        return delta
    flat = delta.reshape(-1)
    n = flat.numel()
    n_keep, n_top = int(density * n), int(gamma * n)
    n_bottom = n - n_keep - n_top
    if n_bottom < 0:  # gamma too large for this density: cut fewer outliers so density holds
        n_top, n_bottom = n_top + n_bottom, 0
    scores = flat.abs()
    # positions [n_bottom, n - n_top) of a stable ascending sort: ties at the low cut drop the
    # lower indices first, ties at the high cut drop the higher indices first
    bottom = top_k_mask(-scores, n_bottom)
    top = top_k_mask(scores.flip(0), n_top).flip(0)
    kept = (flat * ~(bottom | top)).reshape(delta.shape)
    return _l1_rescaled(delta, kept) if rescale else kept


def random_drop(
    delta: torch.Tensor, density: float, generator: torch.Generator, *, rescale: bool = True
) -> torch.Tensor:
    """DARE: keep each entry with probability ``density`` (= 1 - p), rescale by ``1/(1 - p)``."""
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    keep = torch.rand(delta.shape, generator=generator) < density
    kept = delta * keep.to(delta.dtype)
    return kept / density if rescale else kept


def rank_sampling(
    delta: torch.Tensor,
    density: float,
    epsilon: float,
    generator: torch.Generator,
    *,
    rescale: bool = True,
) -> torch.Tensor:
    """DELLA MagPrune: per-row keep probability linear in the magnitude rank, rescaled by 1/p."""
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    if not (0 < density - epsilon and density + epsilon < 1):
        raise ForgeError(
            f"della: density {density} +/- epsilon {epsilon} must stay inside (0, 1); "
            "lower epsilon or move density away from 0 and 1"
        )
    rows = delta.reshape(1, -1) if delta.dim() < 2 else delta.reshape(delta.shape[0], -1)
    n = rows.shape[1]
    order = torch.argsort(rows.abs(), dim=1, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(n).expand_as(order))
    ranks = ranks.to(delta.dtype)  # 0-based magnitude rank of every entry within its row
    rank_norm = ranks / max(n - 1, 1)  # 0 for the smallest |delta| of a row, 1 for the largest
    probs = (density - epsilon) + 2 * epsilon * rank_norm
    keep = torch.rand(rows.shape, generator=generator) < probs
    kept = rows * keep.to(delta.dtype)
    if rescale:
        kept = kept / probs
    return kept.reshape(delta.shape)
