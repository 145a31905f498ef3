"""Task arithmetic (Ilharco et al., "Editing Models with Task Arithmetic", arXiv 2212.04089).

``W = W_base + lambda * sum_i w_i * delta_i`` with task vectors ``delta_i = W_i - W_base``;
``normalize: true`` divides the sum by ``sum_i w_i``. :func:`combine` is the shared tail of the
whole task-vector family (TIES, DARE, Breadcrumbs, DELLA): those only sparsify the deltas first
and may elect a sign per entry. It follows mergekit's ``generalized_task_arithmetic`` order of
operations exactly, so deterministic results agree with mergekit to float rounding.
"""

from __future__ import annotations

from typing import Sequence

import torch

from forgelib.merge.methods.base import MergeInputs, MergeMethod, Param


def combine(
    base: torch.Tensor,
    deltas: Sequence[torch.Tensor],
    weight: Sequence[float],
    *,
    consensus: bool,
    normalize: bool,
    lambda_: float,
) -> torch.Tensor:
    """Weighted sum of (already sparsified) task vectors, optionally sign-elected, added to base.

    With ``consensus`` (TIES "elect" and "disjoint merge") each entry's sign is the sign of the
    sum of the weighted deltas (a zero sum elects +), only deltas of that sign are summed (zeros
    never agree) and the normalizer is the summed weight of those agreeing models; without it,
    the sum of all weights. Sums accumulate model by model, in mergekit's order, instead of
    stacking ``(M, ...)`` copies: the peak stays a few tensors whatever the number of models.
    """
    mixed = torch.zeros_like(base)
    if consensus:
        total = torch.zeros_like(base)
        for delta, w in zip(deltas, weight):
            total += delta * w
        elected_positive = total >= 0
        del total
        divisor = torch.zeros_like(base)
        for delta, w in zip(deltas, weight):
            weighted = delta * w
            agree = torch.where(elected_positive, weighted > 0, weighted < 0)
            mixed += weighted * agree
            divisor += w * agree
        divisor[divisor == 0] = 1  # no model agrees: the entry stays at base, avoid 0/0
    else:
        for delta, w in zip(deltas, weight):
            mixed += delta * w
        divisor = torch.tensor(list(weight), dtype=base.dtype).sum()
        if divisor.abs() < 1e-8:
            divisor = torch.ones((), dtype=base.dtype)
    if normalize:
        mixed = mixed / divisor
    if lambda_ != 1:
        mixed = mixed * lambda_
    return base + mixed


def task_arithmetic(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    normalize: bool = False,
    lambda_: float = 1.0,
) -> torch.Tensor:
    deltas = [m - base for m in models]
    return combine(base, deltas, weight, consensus=False, normalize=normalize, lambda_=lambda_)


# Shared by every task-vector method. int8_mask is mergekit's memory option for the sign mask;
# it cannot change a result, so it is accepted and has no effect here (our mask is boolean).
GTA_GLOBAL = (Param("lambda", float, 1.0), Param("int8_mask", bool, False))


def _apply(x: MergeInputs) -> torch.Tensor:
    return task_arithmetic(
        x.base,
        x.models,
        weight=x.per_model("weight"),
        normalize=x.params["normalize"],
        lambda_=x.params["lambda"],
    )


METHOD = MergeMethod(
    name="task_arithmetic",
    paper="https://arxiv.org/abs/2212.04089",
    merge=_apply,
    global_params=(Param("normalize", bool, False), *GTA_GLOBAL),
    model_params=(Param("weight", float),),
    base="required",
    rowwise=True,
)
