"""BitNet b1.58 quantization-aware training in the Forge loop (``train.bitnet``).

Ma et al. 2024, "The Era of 1-bit LLMs" (arXiv 2402.17764), fine-tuned with the Hugging Face
"Fine-tuning LLMs to 1.58bit" recipe. The attention and MLP nn.Linear layers become
:class:`~forgelib.compress.bitlinear.BitLinear` (absmean ternary weights, per-token absmax int8
activations, straight-through estimator), and ``lam`` blends the quantization in linearly over
``warmup_steps``: ``x + lam * (q(x) - x).detach()`` for weights and activations. Embeddings,
lm_head and norms stay in full precision, as in the paper. The swap shares the Parameter
objects, so the optimizer keeps updating the same latent full-precision weights, checkpoints
hold them, and a resumed run continues exactly.

What is saved is a plain Hugging Face model whose quantized layers hold the ternarized weights
``gamma * {-1, 0, 1}`` (``gamma``: the per-tensor absmean of the latent weight, the
``bitnet158`` codec's scale), which the codec then re-encodes bit for bit: compression stage 1
packs exactly what was trained. Deviation: plain transformers has no int8 activation path, so
the saved model runs its activations in full precision. ``attach`` on the saved model (its
ternary weights are a fixed point of the quantizer) evaluates it with int8 activations as
trained; ``bench/bitnet.py`` reports both.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from forgelib.compress.bitlinear import ramp, set_lambda, swap_bitlinear_for_linear, swap_linear_for_bitlinear
from forgelib.compress.codecs.bitnet158 import absmean_ternary
from forgelib.compress.groups import group_of
from forgelib.errors import ForgeError
from forgelib.train.config import BitNetQATConfig


def in_groups(groups: Iterable[str]) -> Callable[[str], bool]:
    """Selects nn.Linear modules by compression group (``model.layers.0.mlp.up_proj`` -> mlp)."""
    chosen = set(groups)
    return lambda module_name: group_of(f"{module_name}.weight", 2) in chosen


def attach(model: nn.Module, config: BitNetQATConfig) -> list[str]:
    """Swap the configured nn.Linear layers for BitLinear in place; returns their names."""
    swapped = swap_linear_for_bitlinear(model, in_groups(config.modules),
                                        quantize_activations=config.quantize_activations)
    if not swapped:
        raise ForgeError(f"train.bitnet.modules: no nn.Linear of this model is in {list(config.modules)}; "
                         "set train.bitnet.enabled: false for this model")
    return swapped


def warmup_lambda(step: int, warmup_steps: int) -> float:
    """The quantization blend at 0-based ``step``: 0 at step 0, 1 from ``warmup_steps`` on."""
    return ramp(step, warmup_steps)


def set_warmup_lambda(model: nn.Module, step: int, warmup_steps: int) -> float:
    """Set every BitLinear's blend for ``step`` (the loop calls it before each step); returns it."""
    lam = warmup_lambda(step, warmup_steps)
    set_lambda(model, lam)
    return lam


@torch.no_grad()
def ternarize_(model: nn.Module) -> list[str]:
    """Swap every BitLinear back to nn.Linear and replace its latent weight by the ternarized
    ``gamma * trits`` (in place); returns the module names."""
    names = swap_bitlinear_for_linear(model)
    for name in names:
        weight = model.get_submodule(name).weight
        trits, gamma = absmean_ternary(weight)
        # + 0.0 turns the -0.0 that rounding gives small negative weights into the +0.0 the codec
        # decodes, so the codec round trip is bit-exact, not just equal.
        weight.copy_(trits * gamma + 0.0)
    return names
