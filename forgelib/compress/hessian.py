"""Calibration Hessians H = X^T X / n for every nn.Linear input, from a few batches.

GPTQ (Frantar et al. 2022, arXiv 2210.17323) and VPTQ (arXiv 2409.17066) weight a layer's
quantization error by the second moment of its inputs: error in a weight column j costs output
error in proportion to H_jj, and the off-diagonal terms drive the error feedback. One forward
hook per linear layer accumulates X^T X over all non-padding tokens of the calibration batches.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn


@torch.no_grad()
def collect_hessians(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                     names: set[str], *, max_batches: int) -> dict[str, torch.Tensor]:
    """``{'<module>.weight': H (in, in)}`` for the nn.Linear modules whose weight is in ``names``.

    A weight is named as ``model.named_parameters()`` names it, so a tied output layer counts
    under its first name: with tied embeddings, ``model.embed_tokens.weight`` gets the lm_head's
    input Hessian (its use as an output projection is the one GPTQ-style feedback can serve).
    Batches are dicts with ``input_ids`` and optionally ``attention_mask`` (padding excluded).
    """
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    mask_holder: dict[str, torch.Tensor | None] = {"mask": None}

    def hook(weight_name: str):
        def accumulate(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0].detach().float()
            mask = mask_holder["mask"]
            x = x[mask.bool()] if mask is not None and mask.shape == x.shape[:-1] else x.reshape(-1, x.shape[-1])
            sums[weight_name] = sums.get(weight_name, 0) + x.T @ x
            counts[weight_name] = counts.get(weight_name, 0) + x.shape[0]
        return accumulate

    canonical = {id(p): n for n, p in model.named_parameters()}
    handles = [module.register_forward_hook(hook(canonical[id(module.weight)]))
               for module in model.modules()
               if isinstance(module, nn.Linear) and canonical.get(id(module.weight)) in names]
    was_training = model.training
    model.eval()
    try:
        for i, batch in enumerate(batches):
            if i >= max_batches:
                break
            mask_holder["mask"] = batch.get("attention_mask")
            model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: sums[name] / max(counts[name], 1) for name in sums}
