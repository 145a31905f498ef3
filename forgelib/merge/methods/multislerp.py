"""Multi-SLERP: mergekit's spherical barycentre of several tensors (Goddard, "Multi-SLERP",
https://goddard.blog/posts/multislerp-wow-what-a-cool-idea; the exact spherical mean is Buss &
Fillmore, ACM TOG 2001).

mergekit projects each flattened input (a task vector when a base model is given) to the unit
sphere, takes the normalized weighted mean direction ``m`` as the tangent point, averages the
tangent vectors ``u_i - (u_i . m) m`` and maps back with the exponential map, then rescales to the
weighted mean norm. The weighted tangent vectors at the weighted mean always sum to zero
(``sum w_i u_i - ((sum w_i u_i) . m) m = 0``), so the exponential map returns ``m`` itself:
the result is ``m * sum_i w_i |v_i|``, a normalized-linear interpolation of direction with a
linear interpolation of norm. We compute that closed form, which equals mergekit's output to
float rounding. Antipodal inputs (zero mean direction) fall back to the weighted sum for two
inputs, as mergekit does, and are reported for more.
"""

from __future__ import annotations

from typing import Sequence

import torch

from forgelib.errors import ForgeError
from forgelib.merge.methods.base import MergeInputs, MergeMethod, Param


def multislerp(
    models: Sequence[torch.Tensor],
    *,
    weight: Sequence[float],
    base: torch.Tensor | None = None,
    normalize_weights: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    if len(models) == 1:
        return models[0]
    stacked = torch.stack(list(models))
    if base is not None:
        stacked = stacked - base
    flat = stacked.reshape(stacked.shape[0], -1)  # (M, numel)
    w = torch.tensor(list(weight), dtype=flat.dtype)
    if normalize_weights:
        w = w / w.sum()
    norms = flat.norm(dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * w.view(-1, 1)).sum(dim=0)
    mean_norm = mean.norm()
    if mean_norm < eps:
        if len(models) != 2:
            raise ForgeError(
                "multislerp: the weighted mean direction is zero (antipodal inputs); "
                "change the weights"
            )
        merged = (flat[0] * w[0] + flat[1] * w[1]).reshape(stacked.shape[1:])
        return merged if base is None else merged + base
    direction = mean / mean_norm
    merged = (direction * (norms.squeeze(-1) * w).sum()).reshape(stacked.shape[1:])
    return merged if base is None else merged + base


def _apply(x: MergeInputs) -> torch.Tensor:
    return multislerp(
        x.models,
        weight=x.per_model("weight"),
        base=x.base,
        normalize_weights=x.params["normalize_weights"],
        eps=x.params["eps"],
    )


METHOD = MergeMethod(
    name="multislerp",
    paper="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
    merge=_apply,
    global_params=(Param("normalize_weights", bool, True), Param("eps", float, 1e-8)),
    model_params=(Param("weight", float),),
    base="optional",
)
