"""Dtype tables, in one place: the floating-point dtypes weights are kept in (by the name configs
and recipes use), every dtype a file may store (by torch name), and safetensors' header codes."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str | None:
    """The name of ``dtype`` in :data:`DTYPES` (None for any other dtype)."""
    return next((name for name, value in DTYPES.items() if value == dtype), None)


STORAGE_DTYPES: dict[str, torch.dtype] = {str(d).removeprefix("torch."): d for d in (
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32,
    torch.float64, torch.bool)}
"""Every dtype a Forge file stores, by torch name (``"uint8"``, ``"float16"``, ...)."""

SAFETENSORS_CODES: dict[torch.dtype, str] = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
"""The dtype codes of the safetensors header format."""
