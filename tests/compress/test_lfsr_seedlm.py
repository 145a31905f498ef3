"""The LFSR against hand-computed sequences, and SeedLM's search against a planted solution."""

import math

import pytest
import torch

from forgelib.compress.codecs import seedlm
from forgelib.compress.codecs.lfsr import MAXIMAL_TAPS, lfsr_states
from forgelib.errors import ForgeError


def test_k4_sequence_matches_hand_computation():
    # x^4 + x^3 + 1: feedback = bit0 XOR bit1, shifted in at bit 3. From seed 1 (0001):
    # 1 -> 1000=8 -> 0100=4 -> 0010=2 -> 1001=9 -> 1100=12 -> 0110=6 -> 1011=11 -> 0101=5
    #   -> 1010=10 -> 1101=13 -> 1110=14 -> 1111=15 -> 0111=7 -> 0011=3 -> 0001=1 (period 15)
    expected = [8, 4, 2, 9, 12, 6, 11, 5, 10, 13, 14, 15, 7, 3, 1]
    assert lfsr_states(torch.tensor([1]), 4, 15)[0].tolist() == expected


def test_k16_first_states_match_hand_computation():
    # Taps 16,14,13,11 read bits 0,2,3,5. 0xACE1: bits 0,2,3,5 = 1,0,0,1 -> feedback 0 -> 0x5670;
    # 0x5670: bits 0,2,3,5 = 0,0,0,1 -> feedback 1 -> 0x2B38 | 0x8000 = 0xAB38.
    assert lfsr_states(torch.tensor([0xACE1]), 16, 2)[0].tolist() == [0x5670, 0xAB38]


@pytest.mark.parametrize("K", [4, 5, 8, 10, 12])
def test_tap_table_is_maximal_length(K):
    period = (1 << K) - 1
    states = lfsr_states(torch.tensor([1]), K, period)[0]
    assert states[-1] == 1 and len(set(states.tolist())) == period


def test_many_seeds_step_independently():
    seeds = torch.tensor([1, 0xACE1, 77])
    together = lfsr_states(seeds, 16, 5)
    for i, s in enumerate(seeds):
        assert together[i].equal(lfsr_states(s[None], 16, 5)[0])


def test_zero_or_oversized_seed_is_rejected():
    with pytest.raises(ForgeError):
        lfsr_states(torch.tensor([0]), 8, 3)
    with pytest.raises(ForgeError):
        lfsr_states(torch.tensor([256]), 8, 3)
    assert 16 in MAXIMAL_TAPS


def test_basis_maps_states_into_open_interval():
    # K=4: 2^(K-1) = 8, so state 8 -> 0, state 1 -> -7/8, state 15 -> 7/8.
    U = seedlm.basis_from_states(torch.tensor([[8, 1, 15, 4]]), C=2, P=2, K=4)
    assert U.tolist() == [[[0.0, -0.875], [0.875, -0.5]]]


def test_search_recovers_a_planted_seed_exactly():
    cfg = seedlm.SeedLMConfig(C=8, P=3, K=16, max_seeds=512)
    U = seedlm.basis_from_states(lfsr_states(torch.tensor([37, 300]), 16, 24), 8, 3, 16)
    coeffs = torch.tensor([[3.0, -2.0, 5.0], [-7.0, 6.0, 1.0]]) * 2.0**-6  # |q| <= 7 sets e = -6
    w = (U @ coeffs[..., None]).reshape(-1)  # two blocks, each exactly representable
    payload = seedlm.encode(w, cfg)
    assert torch.allclose(seedlm.decode(payload), w, atol=1e-7)
    seeds, _, _ = seedlm.search(w.reshape(2, 8), cfg, exp_lo=-20)
    assert (seeds + 1).tolist() == [37, 300]


def test_more_seeds_never_hurt():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(96, 8, generator=g) * 0.02
    errs = []
    for n in (64, 1024):
        out = seedlm.decode(seedlm.encode(w, seedlm.SeedLMConfig(max_seeds=n)))
        errs.append(float((out - w).pow(2).sum()))
    assert errs[1] < errs[0]


def test_config_validation_names_the_key():
    with pytest.raises(ForgeError, match="max_seeds"):
        seedlm.SeedLMConfig(K=8, max_seeds=1000)
    with pytest.raises(ForgeError, match="P"):
        seedlm.SeedLMConfig(C=4, P=5)
    assert seedlm.SeedLMConfig(max_seeds=65535).bits_per_weight() == pytest.approx((16 + 4 + 12) / 8)
    assert math.isclose(seedlm.SeedLMConfig(C=12, P=4, max_seeds=65535).bits_per_weight(), 3.0)
