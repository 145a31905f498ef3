"""Linear merge / model soup (Wortsman et al., "Model soups: averaging weights of multiple
fine-tuned models improves accuracy without increasing inference time", arXiv 2203.05482).

``W = sum_i w_i W_i``, divided by ``sum_i w_i`` when ``normalize: true`` (mergekit's default).
There is no base model: every input is a soup ingredient.
"""

from __future__ import annotations

from typing import Sequence

import torch

from forgelib.errors import ForgeError
from forgelib.merge.methods.base import MergeInputs, MergeMethod, Param


def linear(
    models: Sequence[torch.Tensor], *, weight: Sequence[float], normalize: bool = True
) -> torch.Tensor:
    stacked = torch.stack(list(models))  # (M, *shape)
    w = torch.tensor(list(weight), dtype=stacked.dtype).view(-1, *([1] * (stacked.dim() - 1)))
    merged = (stacked * w).sum(dim=0)
    if normalize:
        total = float(sum(weight))
        if abs(total) < 1e-12:
            raise ForgeError("linear: the weights sum to 0 with normalize: true; change a weight")
        merged = merged / w.sum(dim=0)
    return merged


def _apply(x: MergeInputs) -> torch.Tensor:
    return linear(x.models, weight=x.per_model("weight"), normalize=x.params["normalize"])


METHOD = MergeMethod(
    name="linear",
    paper="https://arxiv.org/abs/2203.05482",
    merge=_apply,
    global_params=(Param("normalize", bool, True),),
    model_params=(Param("weight", float),),
    base="none",
    rowwise=True,
)
