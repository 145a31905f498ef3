"""Model Breadcrumbs (Davari & Belilovsky, "Model Breadcrumbs: Scaling Multi-Task Model Merging
with Sparse Masks", arXiv 2312.06795).

Per task vector, drop the ``gamma`` fraction of entries with the largest magnitude (outliers) and
the ``1 - density - gamma`` fraction with the smallest, keeping the middle band; combine linearly
(``breadcrumbs``) or with the TIES sign election (``breadcrumbs_ties``). Defaults follow mergekit
(``gamma`` 0.01, no normalization).
"""

from __future__ import annotations

from typing import Sequence

import torch

from forgelib.merge.methods.base import MergeInputs, MergeMethod, Param
from forgelib.merge.methods.sparsify import magnitude_outliers
from forgelib.merge.methods.task_arithmetic import GTA_GLOBAL, combine


def breadcrumbs(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    density: Sequence[float],
    gamma: Sequence[float],
    consensus: bool,
    normalize: bool = False,
    lambda_: float = 1.0,
    rescale: bool = False,
) -> torch.Tensor:
    deltas = [
        magnitude_outliers(m - base, d, g, rescale=rescale)
        for m, d, g in zip(models, density, gamma)
    ]
    return combine(base, deltas, weight, consensus=consensus, normalize=normalize, lambda_=lambda_)


def _method(name: str, consensus: bool) -> MergeMethod:
    def apply(x: MergeInputs) -> torch.Tensor:
        return breadcrumbs(
            x.base,
            x.models,
            weight=x.per_model("weight"),
            density=x.per_model("density"),
            gamma=x.per_model("gamma"),
            consensus=consensus,
            normalize=x.params["normalize"],
            lambda_=x.params["lambda"],
            rescale=x.params["rescale"],
        )

    return MergeMethod(
        name=name,
        paper="https://arxiv.org/abs/2312.06795",
        merge=apply,
        global_params=(Param("normalize", bool, False), Param("rescale", bool, False), *GTA_GLOBAL),
        model_params=(
            Param("weight", float),
            Param("density", float, 1.0),
            Param("gamma", float, 0.01),
        ),
        base="required",
    )


BREADCRUMBS = _method("breadcrumbs", consensus=False)
BREADCRUMBS_TIES = _method("breadcrumbs_ties", consensus=True)
