"""DARE (Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous Models
as a Free Lunch", arXiv 2311.03099).

Drop each task-vector entry with probability ``p = 1 - density`` and rescale the survivors by
``1 / (1 - p)`` (``rescale: true``, the default), then combine linearly (``dare_linear``) or with
the TIES sign election (``dare_ties``). The drop masks come from the engine's generators,
seeded per tensor and model, so a recipe and a seed give the same model every time. Deviation
from mergekit (which matches the L1 norm instead of dividing by ``1 - p``): see ``sparsify.py``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from forgelib.merge.methods.base import MergeInputs, MergeMethod, Param
from forgelib.merge.methods.sparsify import random_drop
from forgelib.merge.methods.task_arithmetic import GTA_GLOBAL, combine


def dare(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    density: Sequence[float],
    generators: Sequence[torch.Generator],
    consensus: bool,
    normalize: bool = False,
    lambda_: float = 1.0,
    rescale: bool = True,
) -> torch.Tensor:
    deltas = [random_drop(m - base, d, g, rescale=rescale)
              for m, d, g in zip(models, density, generators)]
    return combine(base, deltas, weight, consensus=consensus, normalize=normalize, lambda_=lambda_)


def _method(name: str, consensus: bool) -> MergeMethod:
    def apply(x: MergeInputs) -> torch.Tensor:
        return dare(
            x.base,
            x.models,
            weight=x.per_model("weight"),
            density=x.per_model("density"),
            generators=x.generators,
            consensus=consensus,
            normalize=x.params["normalize"],
            lambda_=x.params["lambda"],
            rescale=x.params["rescale"],
        )

    return MergeMethod(
        name=name,
        paper="https://arxiv.org/abs/2311.03099",
        merge=apply,
        global_params=(Param("normalize", bool, False), Param("rescale", bool, True), *GTA_GLOBAL),
        model_params=(Param("weight", float), Param("density", float, 1.0)),
        base="required",
        stochastic=True,
        rowwise=True,
    )


DARE_TIES = _method("dare_ties", consensus=True)
DARE_LINEAR = _method("dare_linear", consensus=False)
