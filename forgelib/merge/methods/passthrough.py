"""Passthrough: copy one model's tensor unchanged, optionally times ``scale`` (mergekit).

It is the building block of frankenmerges, whose ``slices`` stack layer ranges from different
models (Goddard et al., "Arcee's MergeKit: A Toolkit for Merging Large Language Models",
arXiv 2403.13257), and of data-flow merging (``forgelib.merge.dfs``), which uses a filtered
``scale`` on the residual-branch output projections.
"""

from __future__ import annotations

import torch

from forgelib.merge.methods.base import MergeInputs, MergeMethod, Param


def passthrough(tensor: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    return tensor if scale is None else tensor * scale


def _apply(x: MergeInputs) -> torch.Tensor:
    return passthrough(x.models[0], scale=x.model_params[0]["scale"])


METHOD = MergeMethod(
    name="passthrough",
    paper="https://arxiv.org/abs/2403.13257",
    merge=_apply,
    model_params=(Param("scale", float, None),),
    base="none",
    min_models=1,
    max_models=1,
    rowwise=True,
)
