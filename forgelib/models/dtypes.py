"""The floating-point dtypes Forge stores weights in, by the name configs and recipes use."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str | None:
    """The name of ``dtype`` in :data:`DTYPES` (None for any other dtype)."""
    return next((name for name, value in DTYPES.items() if value == dtype), None)
