"""Model Stock (Jang et al., "Model Stock: All we need is just a few fine-tuned models",
arXiv 2403.19522).

With ``N`` fine-tuned models around a base, the paper's interpolation ratio is
``t = N cos(theta) / (1 + (N - 1) cos(theta))`` where ``theta`` is the angle between their task
vectors, and the merge is ``t * mean(W_i) + (1 - t) * W_base``. For ``N > 2`` the paper keeps a
single angle without saying how to pick it; like mergekit we average the pairwise cosines.
``filter_wise: true`` computes one ratio per output row instead of per tensor.
"""

from __future__ import annotations

from typing import Sequence

import torch

from forgelib.merge.methods.base import MergeInputs, MergeMethod, Param


def model_stock(
    base: torch.Tensor, models: Sequence[torch.Tensor], *, filter_wise: bool = False
) -> torch.Tensor:
    if filter_wise:
        w0 = base.unsqueeze(0) if base.dim() == 1 else base
        ws = [m.unsqueeze(0) if m.dim() == 1 else m for m in models]
    else:
        w0, ws = base.reshape(-1), [m.reshape(-1) for m in models]
    offsets = [w - w0 for w in ws]
    cosines = []
    for i in range(len(offsets)):
        for j in range(i + 1, len(offsets)):
            norms = offsets[i].norm(dim=-1) * offsets[j].norm(dim=-1)
            cos = (offsets[i] * offsets[j]).sum(dim=-1) / norms.clamp(min=1e-6)
            cosines.append(cos.clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    n = len(ws)
    t = n * cos / (1 + (n - 1) * cos)
    mean = sum(ws) / n
    return (t * mean + (1 - t) * w0).reshape(base.shape)


def _apply(x: MergeInputs) -> torch.Tensor:
    return model_stock(x.base, x.models, filter_wise=x.params["filter_wise"])


METHOD = MergeMethod(
    name="model_stock",
    paper="https://arxiv.org/abs/2403.19522",
    merge=_apply,
    global_params=(Param("filter_wise", bool, False),),
    base="required",
    min_models=2,
)
