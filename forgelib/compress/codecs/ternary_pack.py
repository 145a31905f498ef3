"""Pack ternary values {-1, 0, +1} densely: 5 trits per byte (1.6 bits) or 4 per byte (2 bits).

BitNet b1.58 (arXiv 2402.17764) names both storage formats. Five trits fit a byte because
3**5 = 243 <= 256: the byte is the base-3 number t0 + 3 t1 + 9 t2 + 27 t3 + 81 t4 with each
digit t = trit + 1 in {0, 1, 2}. The 2-bit form spends a little more space for shift-and-mask
decoding. The padding at the end decodes to trits the caller drops (it knows the count).
"""

from __future__ import annotations

import torch

from forgelib.compress.codecs.bitpack import pack_bits, unpack_bits
from forgelib.errors import ForgeError

PACKINGS = ("trit5", "2bit")
_POW3 = torch.tensor([1, 3, 9, 27, 81], dtype=torch.int64)


def pack_ternary(trits: torch.Tensor, packing: str) -> torch.Tensor:
    """Pack a tensor of values in {-1, 0, 1} into uint8 bytes."""
    flat = trits.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < -1 or int(flat.max()) > 1):
        raise ForgeError("ternary packing needs values in {-1, 0, 1}")
    digits = flat + 1
    if packing == "2bit":
        return pack_bits(digits, 2)
    if packing == "trit5":
        digits = torch.cat([digits, digits.new_zeros((-digits.numel()) % 5)]).reshape(-1, 5)
        return (digits * _POW3).sum(dim=1).to(torch.uint8)
    raise ForgeError(f"ternary packing: expected one of {PACKINGS}, got {packing!r}")


def unpack_ternary(packed: torch.Tensor, packing: str, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_ternary`: ``count`` values in {-1, 0, 1} as int8."""
    if packing == "2bit":
        digits = unpack_bits(packed, 2, count)
    elif packing == "trit5":
        if packed.numel() * 5 < count:
            raise ForgeError(f"ternary stream holds {packed.numel() * 5} trits, need {count}")
        if packed.numel() and int(packed.max()) > 242:  # 3**5 - 1: larger bytes encode no trits
            raise ForgeError("ternary stream holds a byte above 242: the payload is corrupt")
        digits = (packed.to(torch.int64)[:, None] // _POW3) % 3
        digits = digits.reshape(-1)[:count]
    else:
        raise ForgeError(f"ternary packing: expected one of {PACKINGS}, got {packing!r}")
    if digits.numel() and int(digits.max()) > 2:  # 2-bit code 3 encodes no trit
        raise ForgeError("ternary stream holds the 2-bit code 3: the payload is corrupt")
    return (digits - 1).to(torch.int8)
