"""BitLinear: a drop-in nn.Linear that trains through BitNet b1.58 quantization (QAT).

Ma et al. 2024 (arXiv 2402.17764) and Wang et al. 2023 (BitNet, arXiv 2310.11453): weights are
ternarized with the per-tensor absmean scale, activations are quantized to int8 with a per-token
absmax scale, and gradients pass straight through the rounding (STE:
``x + (q(x) - x).detach()``). For fine-tuning a model that was trained in full precision the
quantization is blended in with ``lam`` (``x + lam * (q(x) - x).detach()``), ramped as
``lam = min(step / ramp, 1)``: switching it on at once collapses the model.

Deviation: the paper's BitLinear normalises its input (SubLN) before quantizing. Converting a
pretrained Llama, we do not insert a new, untrained norm: the q/k/v and gate/up inputs already
come out of an RMSNorm, and an extra norm on o_proj/down_proj inputs would change the function
before any healing step.

The weight quantizer is the codec's own :func:`absmean_ternary`, so what the heal trains
against is exactly what the ``bitnet158`` codec stores.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from forgelib.compress.codecs.bitnet158 import absmean_ternary

ACT_MAX = 127.0  # int8 absmax: the largest magnitude maps to +-127


def quantize_activations(x: torch.Tensor) -> torch.Tensor:
    """Per-token (last dim) int8 absmax fake-quantization: round(x * 127 / max|x|) * max|x| / 127."""
    scale = ACT_MAX / x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-5)
    return (x * scale).round().clamp(-ACT_MAX - 1, ACT_MAX) / scale


def ternarize_weight(weight: torch.Tensor) -> torch.Tensor:
    """The dequantized ternary weight gamma * clamp(round(W / gamma), -1, 1)."""
    trits, gamma = absmean_ternary(weight)
    return trits * gamma


class BitLinear(nn.Linear):
    """nn.Linear with STE-quantized weights (ternary) and, optionally, activations (int8).

    ``lam`` in [0, 1] blends the quantization in: 0 is the plain linear layer, 1 is full BitNet.
    Parameter names are nn.Linear's, so a state dict moves between the two unchanged.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 *, quantize_activations: bool = True, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.lam = 1.0
        self.quantize_activations = quantize_activations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = w + self.lam * (ternarize_weight(w) - w).detach()
        if self.quantize_activations:
            x = x + self.lam * (quantize_activations(x) - x).detach()
        return F.linear(x, w, self.bias)


def ramp(step: int, ramp_steps: int) -> float:
    """The quantization blend ``lam = min(step / ramp_steps, 1)`` (1 at once if ramp_steps is 0)."""
    return 1.0 if ramp_steps <= 0 else min(step / ramp_steps, 1.0)


def set_lambda(model: nn.Module, lam: float) -> None:
    for module in model.modules():
        if isinstance(module, BitLinear):
            module.lam = lam


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def swap_linear_for_bitlinear(model: nn.Module, include: Callable[[str], bool],
                              *, quantize_activations: bool = True) -> list[str]:
    """Replace (in place) every nn.Linear whose module name passes ``include`` by a BitLinear
    sharing its parameters. Returns the swapped module names."""
    targets = [name for name, m in model.named_modules() if type(m) is nn.Linear and include(name)]
    for name in targets:
        old = model.get_submodule(name)
        new = BitLinear(old.in_features, old.out_features, bias=old.bias is not None,
                        quantize_activations=quantize_activations, device="meta")
        new.weight, new.bias = old.weight, old.bias  # same Parameter objects: optimizer state, ties
        _replace(model, name, new)
    return targets


def swap_bitlinear_for_linear(model: nn.Module) -> list[str]:
    """Undo :func:`swap_linear_for_bitlinear`: BitLinear -> nn.Linear with the latent weights."""
    targets = [name for name, m in model.named_modules() if isinstance(m, BitLinear)]
    for name in targets:
        old = model.get_submodule(name)
        new = nn.Linear(old.in_features, old.out_features, bias=old.bias is not None, device="meta")
        new.weight, new.bias = old.weight, old.bias
        _replace(model, name, new)
    return targets
