"""What every codec shares: the payload it produces, its registry entry, and config checks.

A codec is a pair of pure functions, ``encode(tensor, config) -> Payload`` and
``decode(payload) -> Tensor``. A :class:`Payload` holds named tensors (the bulk bytes that go
into the container) and a small JSON-able ``meta`` dict with everything ``decode`` needs besides
them (shape, dtype, scalar scales). ``decode`` never sees the config: a container must decode
with nothing but what it stores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from forgelib.configtools import check, doc  # noqa: F401  (re-exported for the codec configs)
from forgelib.errors import ForgeError
from forgelib.models.dtypes import DTYPES, dtype_name


@dataclass
class Payload:
    """One encoded tensor: bulk ``tensors`` (stored in the container) plus JSON-able ``meta``."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def nbytes(self) -> int:
        """Bytes of the bulk tensors (the container adds its header on top)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


@dataclass(frozen=True)
class Codec:
    """A registry entry. ``needs_hessian``: ``encode`` takes a ``hessian=`` keyword (VPTQ)."""

    name: str
    config_type: type
    encode: Callable[..., Payload]
    decode: Callable[[Payload], torch.Tensor]
    citation: str
    needs_hessian: bool = False


def base_meta(tensor: torch.Tensor) -> dict[str, Any]:
    """The shape and dtype every payload records so ``decode`` can restore them."""
    name = dtype_name(tensor.dtype)
    if name is None:
        raise ForgeError(
            f"tensor dtype {tensor.dtype} cannot be compressed; expected one of {sorted(DTYPES)}"
        )
    return {"shape": list(tensor.shape), "dtype": name}


def restore(values: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
    """Cast and reshape a decoded flat float tensor back to the recorded shape and dtype."""
    return values.reshape(meta["shape"]).to(DTYPES[meta["dtype"]])


def is_power_of_two(n: int) -> bool:
    return isinstance(n, int) and n >= 1 and (n & (n - 1)) == 0


def index_bits(n_symbols: int) -> int:
    """Bits needed to store an index in ``range(n_symbols)`` (at least 1)."""
    return max(1, math.ceil(math.log2(n_symbols)))
