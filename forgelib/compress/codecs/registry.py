"""The codec registry: an explicit list, turned into a dict. Add a codec here and the tests and
the pipeline pick it up; an unknown name lists the valid ones."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch

from forgelib.compress.codecs import bitnet158, gptq, hyperfn, int8, passthrough, seedlm, vptq
from forgelib.compress.codecs.base import Codec
from forgelib.configtools import FieldError
from forgelib.errors import ForgeError

CODECS: list[Codec] = [
    Codec("fp32", passthrough.PassthroughConfig, passthrough.encode_fp32, passthrough.decode_fp32, passthrough.CITATION),
    Codec("fp16", passthrough.PassthroughConfig, passthrough.encode_fp16, passthrough.decode_fp16, passthrough.CITATION),
    Codec("bf16", passthrough.PassthroughConfig, passthrough.encode_bf16, passthrough.decode_bf16, passthrough.CITATION),
    Codec("int8", int8.Int8Config, int8.encode, int8.decode, int8.CITATION),
    Codec("bitnet158", bitnet158.BitNetConfig, bitnet158.encode, bitnet158.decode, bitnet158.CITATION),
    Codec("seedlm", seedlm.SeedLMConfig, seedlm.encode, seedlm.decode, seedlm.CITATION),
    Codec("vptq", vptq.VPTQConfig, vptq.encode, vptq.decode, vptq.CITATION, needs_hessian=True),
    Codec("gptq", gptq.GPTQConfig, gptq.encode, gptq.decode, gptq.CITATION, needs_hessian=True),
    Codec("hyperfn", hyperfn.HyperFnConfig, hyperfn.encode, hyperfn.decode, hyperfn.CITATION),
]
REGISTRY: dict[str, Codec] = {codec.name: codec for codec in CODECS}


def get_codec(name: str) -> Codec:
    if name not in REGISTRY:
        raise ForgeError(f"unknown codec {name!r}; valid codecs: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def make_config(name: str, settings: Mapping[str, Any] | None = None, *, where: str = "") -> Any:
    """Build codec ``name``'s config from a mapping. Errors are :class:`FieldError`s whose field
    is prefixed with ``where`` (e.g. ``mlp.k``), so a params parser can add the section path."""
    codec = get_codec(name)
    settings = dict(settings or {})
    prefix = f"{where}." if where else ""
    known = {f.name for f in dataclasses.fields(codec.config_type)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise FieldError(f"{prefix}{unknown[0]}", f"unknown setting for codec {name!r}; valid: {sorted(known) or 'none'}")
    try:
        return codec.config_type(**settings)
    except FieldError as err:
        raise FieldError(f"{prefix}{err.field}", err.message) from None
    except TypeError as err:
        raise FieldError(where or name, str(err)) from None


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


FP16_MAX = 65504.0


def decode_entry(entry) -> torch.Tensor:
    """One container entry decoded, at fp16 precision unless the codec stores fp32.

    A codec's decoder returns fp32 products of its parts (a ternary code times a scale, a
    SeedLM basis times coefficients, a VPTQ centroid), which fp16 cannot hold exactly. Decoding
    rounds them to the nearest fp16 value (kept in an fp32 tensor, so every loader computes in
    fp32 as before): the shipped model is then exactly what an F16 GGUF or an fp16 checkpoint
    stores, and exporting it loses nothing. The rounding (relative 2^-11) is far below any lossy
    codec's own error, and every retention figure is measured on the rounded model. The ``fp32``
    passthrough codec (stored lossless on purpose) and tensors beyond fp16's range are left as
    decoded.
    """
    tensor = get_codec(entry.codec).decode(entry.payload)
    if entry.codec != "fp32" and tensor.dtype == torch.float32 and tensor.numel() \
            and float(tensor.abs().max()) <= FP16_MAX:
        tensor = tensor.to(torch.float16).to(torch.float32)
    return tensor
