"""Geometry of hidden states: TwoNN intrinsic dimension and a grokking-stage rule.

TwoNN (Facco, d'Errico, Rodriguez & Laio, "Estimating the intrinsic dimension of datasets by a
minimal neighborhood information", Sci. Rep. 7, 12140, 2017): for each point, ``mu = r2 / r1``,
the ratio of the distances to its second and first nearest neighbours, follows a Pareto law
``F(mu) = 1 - mu^(-d)`` on a locally uniform d-dimensional manifold. So ``-log(1 - F(mu))`` is a
line ``d * log(mu)`` through the origin; ``d`` is its least-squares slope, with the empirical CDF
``F(mu_(i)) = i / N`` on the sorted ratios, fitted on the lowest 90% (the largest ratios are the
noisiest). Duplicate points would give ``r1 = 0`` and are dropped first, as the paper requires.

Ansuini et al. (NeurIPS 2019) found the ID of a network's layers to be hunch-shaped and the
last-layer ID to track generalisation; :func:`classify_grokking_stage` turns that observation into
an explicit rule, documented on the function. The rule is ours (no published classifier exists).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

STAGES = ("pre-grok", "onset", "active", "consolidation")


def twonn_dimension(points: Tensor, *, fit_fraction: float = 0.9) -> float:
    """TwoNN intrinsic dimension of ``points`` (N, D); needs at least 3 distinct points."""
    x = torch.unique(points.detach().to(torch.float64).reshape(points.shape[0], -1), dim=0)
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"TwoNN needs at least 3 distinct points, got {n}")
    distances = torch.cdist(x, x)
    distances.fill_diagonal_(math.inf)
    r1_r2 = distances.topk(2, dim=1, largest=False).values  # (N, 2), ascending
    mu = torch.sort(r1_r2[:, 1] / r1_r2[:, 0]).values
    keep = max(2, int(math.floor(fit_fraction * n)))
    empirical_cdf = torch.arange(1, n + 1, dtype=torch.float64) / n
    log_mu = torch.log(mu[:keep])
    target = -torch.log1p(-empirical_cdf[:keep])
    return float((log_mu * target).sum() / (log_mu * log_mu).sum())


def relative_slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` per probe, divided by their mean (0 for < 2 values)."""
    if len(values) < 2:
        return 0.0
    t = torch.arange(len(values), dtype=torch.float64)
    v = torch.tensor(list(values), dtype=torch.float64)
    slope = ((t - t.mean()) * (v - v.mean())).sum() / ((t - t.mean()) ** 2).sum()
    return float(slope / v.abs().mean().clamp_min(1e-12))


def classify_grokking_stage(
    id_history: Sequence[float],
    *,
    train_acc: float,
    val_acc: float,
    slope_tol: float = 0.02,
    gap_large: float = 0.2,
    gap_small: float = 0.1,
    val_low: float = 0.2,
    val_high: float = 0.9,
) -> str:
    """One of :data:`STAGES`, from the recent ID trend and the train/validation accuracy gap.

    ``gap = train_acc - val_acc`` and ``trend = relative_slope(id_history)`` (per probe). The
    rule, checked in order:

    1. consolidation: ``val_acc >= val_high`` and ``gap <= gap_small`` (generalised; the ID may
       still be settling but accuracy no longer moves);
    2. onset: the model has not generalised (``gap >= gap_large`` or ``val_acc < val_low``) but
       the ID has started to fall (``trend <= -slope_tol``): representations begin to compress
       before validation accuracy moves;
    3. pre-grok: not generalised and the ID is flat or rising (memorisation);
    4. active: everything in between (the gap is closing, validation accuracy is rising).
    """
    gap = train_acc - val_acc
    trend = relative_slope(id_history)
    if val_acc >= val_high and gap <= gap_small:
        return "consolidation"
    not_generalised = gap >= gap_large or val_acc < val_low
    if not_generalised and trend <= -slope_tol:
        return "onset"
    if not_generalised:
        return "pre-grok"
    return "active"
