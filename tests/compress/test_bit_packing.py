"""Bit-exact packing: arbitrary-width integers and ternary values (both BitNet packings)."""

import pytest
import torch

from forgelib.compress.codecs.bitpack import pack_bits, unpack_bits
from forgelib.compress.codecs.ternary_pack import pack_ternary, unpack_ternary
from forgelib.errors import ForgeError


def test_pack_bits_layout_is_lsb_first():
    # 1 -> bits 1,0 ; 2 -> 0,1 ; 3 -> 1,1 : stream 1,0,0,1,1,1,0,0 = 1 + 8 + 16 + 32 = 57
    assert pack_bits(torch.tensor([1, 2, 3]), 2).tolist() == [57]


@pytest.mark.parametrize("bits", [1, 3, 4, 7, 12, 16, 20])
def test_pack_bits_round_trip_and_size(bits):
    g = torch.Generator().manual_seed(bits)
    values = torch.randint(0, 1 << bits, (1001,), generator=g)
    packed = pack_bits(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-1001 * bits // 8)
    assert unpack_bits(packed, bits, 1001).equal(values)


def test_pack_bits_rejects_out_of_range():
    with pytest.raises(ForgeError):
        pack_bits(torch.tensor([4]), 2)


def test_trit5_known_byte():
    # digits t+1 = 0,1,2,2,0 -> 0 + 1*3 + 2*9 + 2*27 + 0*81 = 75
    assert pack_ternary(torch.tensor([-1, 0, 1, 1, -1]), "trit5").tolist() == [75]


@pytest.mark.parametrize("packing,per_byte", [("trit5", 5), ("2bit", 4)])
@pytest.mark.parametrize("n", [1, 4, 5, 7, 1000, 1003])
def test_ternary_round_trip_is_exact(packing, per_byte, n):
    g = torch.Generator().manual_seed(n)
    trits = torch.randint(-1, 2, (n,), generator=g).to(torch.int8)
    packed = pack_ternary(trits, packing)
    assert packed.numel() == -(-n // per_byte)
    assert unpack_ternary(packed, packing, n).equal(trits)


def test_corrupt_trit_byte_is_rejected():
    with pytest.raises(ForgeError, match="corrupt"):
        unpack_ternary(torch.tensor([250], dtype=torch.uint8), "trit5", 5)
