"""DELLA-Merging (Deep et al., "DELLA-Merging: Reducing Interference in Model Merging through
Magnitude-Based Sampling", arXiv 2406.11617).

MagPrune: within each row of a task vector, rank entries by magnitude and keep each with a
probability rising linearly from ``density - epsilon`` (smallest) to ``density + epsilon``
(largest); survivors are divided by their keep probability (``rescale: true``, the default).
Then combine with the TIES sign election (``della``, normalized by default) or linearly
(``della_linear``), scaled by ``lambda``. Defaults follow mergekit (``epsilon`` 0.15).
"""

from __future__ import annotations

from typing import Sequence

import torch

from forgelib.merge.methods.base import MergeInputs, MergeMethod, Param
from forgelib.merge.methods.sparsify import rank_sampling
from forgelib.merge.methods.task_arithmetic import GTA_GLOBAL, combine


def della(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    density: Sequence[float],
    epsilon: Sequence[float],
    generators: Sequence[torch.Generator],
    consensus: bool,
    normalize: bool = True,
    lambda_: float = 1.0,
    rescale: bool = True,
) -> torch.Tensor:
    deltas = [rank_sampling(m - base, d, e, g, rescale=rescale)
              for m, d, e, g in zip(models, density, epsilon, generators)]
    return combine(base, deltas, weight, consensus=consensus, normalize=normalize, lambda_=lambda_)


def _method(name: str, consensus: bool, default_normalize: bool) -> MergeMethod:
    def apply(x: MergeInputs) -> torch.Tensor:
        return della(
            x.base,
            x.models,
            weight=x.per_model("weight"),
            density=x.per_model("density"),
            epsilon=x.per_model("epsilon"),
            generators=x.generators,
            consensus=consensus,
            normalize=x.params["normalize"],
            lambda_=x.params["lambda"],
            rescale=x.params["rescale"],
        )

    return MergeMethod(
        name=name,
        paper="https://arxiv.org/abs/2406.11617",
        merge=apply,
        global_params=(
            Param("normalize", bool, default_normalize),
            Param("rescale", bool, True),
            *GTA_GLOBAL,
        ),
        model_params=(
            Param("weight", float),
            Param("density", float, 1.0),
            Param("epsilon", float, 0.15),
        ),
        base="required",
        stochastic=True,
        rowwise=True,
    )


DELLA = _method("della", consensus=True, default_normalize=True)
DELLA_LINEAR = _method("della_linear", consensus=False, default_normalize=False)
