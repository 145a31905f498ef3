"""Store a tensor as plain floats (fp32, fp16 or bf16): for the parts left uncompressed.

Norm weights and other small tensors are not worth a codec, but their bytes still count, so they
go through the container like everything else. fp32 is lossless; fp16 and bf16 round to nearest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from forgelib.compress.codecs.base import Payload, base_meta, restore

CITATION = "IEEE 754 half precision / bfloat16 storage (no compression paper)"


@dataclass(frozen=True)
class PassthroughConfig:
    """No settings: the storage dtype is the codec's name."""


def _make(dtype: torch.dtype):
    def encode(tensor: torch.Tensor, config: PassthroughConfig) -> Payload:
        return Payload({"values": tensor.detach().to(dtype).contiguous().clone()}, base_meta(tensor))

    def decode(payload: Payload) -> torch.Tensor:
        return restore(payload.tensors["values"].float(), payload.meta)

    return encode, decode


encode_fp32, decode_fp32 = _make(torch.float32)
encode_fp16, decode_fp16 = _make(torch.float16)
encode_bf16, decode_bf16 = _make(torch.bfloat16)
