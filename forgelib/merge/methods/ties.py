"""TIES-Merging (Yadav et al., "Resolving Interference When Merging Models", arXiv 2306.01708).

Trim each task vector to its top-``density`` magnitudes, elect a sign per entry (sign of the sum
of the weighted trimmed deltas), and average only the deltas that agree with it: with
``normalize: true`` (the default, as in mergekit) each entry is divided by the summed weights of
the agreeing models. ``lambda`` scales the merged delta before it is added to the base.
"""

from __future__ import annotations

from typing import Sequence

import torch

from forgelib.merge.methods.base import MergeInputs, MergeMethod, Param
from forgelib.merge.methods.sparsify import magnitude
from forgelib.merge.methods.task_arithmetic import GTA_GLOBAL, combine


def ties(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    density: Sequence[float],
    normalize: bool = True,
    lambda_: float = 1.0,
    rescale: bool = False,
) -> torch.Tensor:
    deltas = [magnitude(m - base, d, rescale=rescale) for m, d in zip(models, density)]
    return combine(base, deltas, weight, consensus=True, normalize=normalize, lambda_=lambda_)


def _apply(x: MergeInputs) -> torch.Tensor:
    return ties(
        x.base,
        x.models,
        weight=x.per_model("weight"),
        density=x.per_model("density"),
        normalize=x.params["normalize"],
        lambda_=x.params["lambda"],
        rescale=x.params["rescale"],
    )


METHOD = MergeMethod(
    name="ties",
    paper="https://arxiv.org/abs/2306.01708",
    merge=_apply,
    global_params=(Param("normalize", bool, True), Param("rescale", bool, False), *GTA_GLOBAL),
    model_params=(Param("weight", float), Param("density", float, 1.0)),
    base="required",
)
