"""Pack unsigned integers of any bit width (1..32) into a dense byte string, and back.

Sizes must be honest: a 12-bit index costs 12 bits, not 16. Values are laid out as one
little-endian bit stream (value i occupies bits [i*b, (i+1)*b)), padded with zero bits to a whole
byte. The count is not stored here; the caller's metadata knows it.
"""

from __future__ import annotations

import torch

from forgelib.errors import ForgeError

# A multiple of 8 values always fills whole bytes, so chunks can be packed independently; chunking
# bounds the (values x bits) int64 scratch to ~64 MiB on a 135M-parameter model.
_CHUNK = 1 << 18


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack non-negative integers ``< 2**bits`` into a uint8 tensor of ``ceil(n*bits/8)`` bytes."""
    if not 1 <= bits <= 32:
        raise ForgeError(f"bit width must be in [1, 32], got {bits}")
    flat = values.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= (1 << bits)):
        raise ForgeError(f"values out of range for {bits}-bit packing")
    shifts = torch.arange(bits, dtype=torch.int64)
    byte_weights = 1 << torch.arange(8, dtype=torch.int64)
    chunks = []
    for start in range(0, flat.numel(), _CHUNK):
        stream = ((flat[start : start + _CHUNK, None] >> shifts) & 1).reshape(-1)  # LSB first
        stream = torch.cat([stream, stream.new_zeros((-stream.numel()) % 8)]).reshape(-1, 8)
        chunks.append((stream * byte_weights).sum(dim=1).to(torch.uint8))
    return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``count`` values as int64."""
    if packed.numel() * 8 < count * bits:
        raise ForgeError(f"packed stream holds {packed.numel() * 8} bits, need {count * bits}")
    shifts = torch.arange(bits, dtype=torch.int64)
    chunk_bytes = _CHUNK * bits // 8
    out = []
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        raw = packed[start * bits // 8 : start * bits // 8 + chunk_bytes].to(torch.int64)
        stream = ((raw[:, None] >> torch.arange(8, dtype=torch.int64)) & 1).reshape(-1)
        out.append((stream[: n * bits].reshape(n, bits) << shifts).sum(dim=1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)
