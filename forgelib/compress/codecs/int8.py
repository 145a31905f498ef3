"""Symmetric absmax int8 with one fp16 scale per row (per tensor for 1-D tensors).

LLM.int8() (Dettmers et al. 2022, arXiv 2208.07339) uses this vector-wise absmax scheme for
weights; we keep only that part (no outlier decomposition). ``scale = max|row| / 127``,
``q = round(w / scale)``. A row of zeros gets scale 0 and decodes to zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from forgelib.compress.codecs.base import Payload, base_meta, restore

CITATION = "Dettmers et al. 2022, LLM.int8(), arXiv 2208.07339 (vector-wise absmax weights)"


@dataclass(frozen=True)
class Int8Config:
    """No settings: one scale per row of a 2-D (or higher) tensor, one per 1-D tensor."""


def encode(tensor: torch.Tensor, config: Int8Config) -> Payload:
    rows = tensor.detach().float().reshape(tensor.shape[0] if tensor.dim() > 1 else 1, -1)
    # The scale is rounded to fp16 *before* quantizing so the stored scale is the one used.
    scale = (rows.abs().amax(dim=1, keepdim=True) / 127).to(torch.float16)
    safe = scale.float().masked_fill(scale == 0, 1.0)
    q = (rows / safe).round().clamp(-127, 127).to(torch.int8)
    return Payload({"q": q, "scale": scale}, base_meta(tensor))


def decode(payload: Payload) -> torch.Tensor:
    values = payload.tensors["q"].float() * payload.tensors["scale"].float()
    return restore(values, payload.meta)
