"""SLERP: spherical linear interpolation (Shoemake, "Animating rotation with quaternion curves",
SIGGRAPH 1985), applied to whole flattened weight tensors as in mergekit.

``t = 0`` gives the base model, ``t = 1`` the other one. The two tensors are normalized only to
measure the angle ``theta``; the result interpolates the original tensors with
``sin((1-t) theta)/sin(theta)`` and ``sin(t theta)/sin(theta)``. When they are nearly colinear
(``|cos theta| > 0.9995``) the formula is ill-conditioned and mergekit falls back to ``lerp``;
so do we, with the same threshold.
"""

from __future__ import annotations

import torch

from forgelib.merge.methods.base import MergeInputs, MergeMethod, Param

DOT_THRESHOLD = 0.9995


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, *, eps: float = 1e-8) -> torch.Tensor:
    a, b = v0.float(), v1.float()
    norm_a, norm_b = a.norm(), b.norm()
    unit_a = a / norm_a if norm_a > eps else a
    unit_b = b / norm_b if norm_b > eps else b
    dot = (unit_a * unit_b).sum()
    if dot.abs() > DOT_THRESHOLD:
        return ((1 - t) * a + t * b).to(v0.dtype)
    theta = torch.arccos(dot)
    sin_theta = torch.sin(theta)
    s0 = torch.sin(theta - theta * t) / sin_theta
    s1 = torch.sin(theta * t) / sin_theta
    return (s0 * a + s1 * b).to(v0.dtype)


def _apply(x: MergeInputs) -> torch.Tensor:
    return slerp(x.params["t"], x.base, x.models[0])


METHOD = MergeMethod(
    name="slerp",
    paper="https://en.wikipedia.org/wiki/Slerp",
    merge=_apply,
    global_params=(Param("t", float),),
    base="required",
    min_models=1,
    max_models=1,
)
