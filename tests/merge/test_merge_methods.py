"""Every registered merge method against numbers worked out by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from forgelib.errors import ForgeError
from forgelib.merge.methods.base import MergeInputs
from forgelib.merge.methods.breadcrumbs import breadcrumbs
from forgelib.merge.methods.dare import dare
from forgelib.merge.methods.della import della
from forgelib.merge.methods.linear import linear
from forgelib.merge.methods.model_stock import model_stock
from forgelib.merge.methods.multislerp import multislerp
from forgelib.merge.methods.passthrough import passthrough
from forgelib.merge.methods.registry import REGISTRY, get_method
from forgelib.merge.methods.slerp import slerp
from forgelib.merge.methods.sparsify import random_drop, rank_sampling
from forgelib.merge.methods.task_arithmetic import task_arithmetic
from forgelib.merge.methods.ties import ties

T = torch.tensor
HAND_TESTED = {"linear", "slerp", "multislerp", "task_arithmetic", "ties", "dare_ties",
               "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear",
               "model_stock", "passthrough"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_method_has_a_hand_computed_test(name):
    assert name in HAND_TESTED


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ForgeError, match="valid: .*dare_ties.*ties"):
        get_method("tie")


def test_linear_weighted_average_and_sum():
    a, b = T([1.0, 2.0]), T([3.0, 6.0])
    assert_close(linear([a, b], weight=[1, 3]), T([2.5, 5.0]))  # (1*1 + 3*3) / 4
    assert_close(linear([a, b], weight=[1, 3], normalize=False), T([10.0, 20.0]))
    with pytest.raises(ForgeError, match="sum to 0"):
        linear([a, b], weight=[1, -1])


def test_task_arithmetic_lambda_and_normalize():
    base, m1, m2 = T([1.0, 2.0]), T([2.0, 2.0]), T([1.0, 4.0])  # deltas [1, 0] and [0, 2]
    # lambda * (0.5*[1,0] + 1*[0,2]) = 2 * [0.5, 2]
    assert_close(task_arithmetic(base, [m1, m2], weight=[0.5, 1], lambda_=2.0), T([2.0, 6.0]))
    # normalize divides by the weight sum 1.5 before lambda
    assert_close(task_arithmetic(base, [m1, m2], weight=[0.5, 1], normalize=True, lambda_=2.0),
                 base + T([0.5 / 1.5, 2 / 1.5]) * 2)


def test_ties_trims_elects_signs_and_divides_by_agreeing_weights():
    base = T([1.0, 1.0, 1.0, 1.0])
    d1, d2, d3 = T([1.0, -2.0, 0.5, 3.0]), T([-1.0, 1.5, 0.5, -0.8]), T([2.0, 0.3, -0.4, -0.2])
    # density 0.5 keeps the top 2 |delta|: d1 -> [0,-2,0,3], d2 -> [-1,1.5,0,0], d3 -> [2,0,-0.4,0]
    # weighted (w = 1, 1, 0.5): [0,-2,0,3], [-1,1.5,0,0], [1,0,-0.2,0]; column sums [0,-0.5,-0.2,3]
    # elected signs [+,-,-,+]; agreeing entries / their weights: [1/0.5, -2/1, -0.2/0.5, 3/1]
    merged = ties(base, [base + d1, base + d2, base + d3], weight=[1, 1, 0.5], density=[0.5] * 3)
    assert_close(merged, base + T([2.0, -2.0, -0.4, 3.0]))
    no_norm = ties(base, [base + d1, base + d2, base + d3], weight=[1, 1, 0.5], density=[0.5] * 3,
                   normalize=False, lambda_=0.5)
    assert_close(no_norm, base + 0.5 * T([1.0, -2.0, -0.2, 3.0]))


def test_breadcrumbs_drops_outliers_and_small_entries():
    delta = T([0.1, -0.5, 0.3, 2.0, -0.05, 0.7, 0.2, -1.0, 0.4, 0.6])
    # density 0.6, gamma 0.1 of 10: drop the 1 largest (2.0) and the 3 smallest (0.05, 0.1, 0.2)
    kept = T([0.0, -0.5, 0.3, 0.0, 0.0, 0.7, 0.0, -1.0, 0.4, 0.6])
    base = torch.zeros(10)
    out = breadcrumbs(base, [delta], weight=[1.0], density=[0.6], gamma=[0.1], consensus=False)
    assert_close(out, kept)
    method = get_method("breadcrumbs")
    via_registry = method.merge(MergeInputs(base, [delta], [{"weight": 1.0, "density": 0.6, "gamma": 0.1}],
                                            {"normalize": False, "rescale": False, "lambda": 1.0, "int8_mask": False}))
    assert_close(via_registry, kept)


def test_breadcrumbs_ties_uses_sign_consensus():
    base = torch.zeros(3)
    d1, d2 = T([1.0, -2.0, 3.0]), T([-3.0, 1.0, 1.0])
    # density 1 keeps everything; sums [-2,-1,4] elect [-,-,+]; agreeing: [-3, -2, 3+1]
    out = breadcrumbs(base, [d1, d2], weight=[1, 1], density=[1, 1], gamma=[0.01] * 2, consensus=True)
    assert_close(out, T([-3.0, -2.0, 4.0]))
    normalized = breadcrumbs(base, [d1, d2], weight=[1, 1], density=[1, 1], gamma=[0.01] * 2,
                             consensus=True, normalize=True)
    assert_close(normalized, T([-3.0, -2.0, 2.0]))


def test_dare_drop_probability_and_rescale_by_one_over_one_minus_p():
    delta = torch.linspace(0.5, 1.5, 20000)
    for density in (0.3, 0.8):
        out = random_drop(delta, density, torch.Generator().manual_seed(7))
        kept = out != 0
        # survivors are exactly delta / (1 - p) with p = 1 - density
        assert_close(out[kept], delta[kept] / density)
        # drop rate p within 4 sigma of a binomial(20000, p)
        sigma = math.sqrt(density * (1 - density) / delta.numel())
        assert abs(kept.float().mean().item() - density) < 4 * sigma
        assert abs(out.mean().item() - delta.mean().item()) < 0.03  # unbiased in expectation
    same = random_drop(delta, 0.3, torch.Generator().manual_seed(7))
    assert torch.equal(same, random_drop(delta, 0.3, torch.Generator().manual_seed(7)))
    assert not torch.equal(same, random_drop(delta, 0.3, torch.Generator().manual_seed(8)))
    raw = random_drop(delta, 0.3, torch.Generator().manual_seed(7), rescale=False)
    assert_close(raw[raw != 0], delta[raw != 0])  # rescale: false keeps survivors as they are


def test_dare_linear_and_dare_ties_merge_the_dropped_deltas():
    base = torch.zeros(6)
    d1, d2 = T([1.0, -2.0, 3.0, 1.0, -1.0, 2.0]), T([-3.0, 1.0, 1.0, 2.0, -2.0, -1.0])
    expected_1 = random_drop(d1, 0.5, torch.Generator().manual_seed(3))
    expected_2 = random_drop(d2, 0.5, torch.Generator().manual_seed(4))
    seeded = [torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)]
    out = dare(base, [d1, d2], weight=[1, 0.5], density=[0.5, 0.5], generators=seeded, consensus=False)
    assert_close(out, expected_1 + 0.5 * expected_2)
    # density 1 drops nothing: dare_ties is then plain TIES sign consensus, dare_linear plain sums
    full = dare(base, [d1, d2], weight=[1, 1], density=[1, 1],
                generators=[torch.Generator()] * 2, consensus=True)
    assert_close(full, T([-3.0, -2.0, 4.0, 3.0, -3.0, 2.0]))


def test_della_keep_probability_rises_with_magnitude_rank():
    # every row ranks its columns the same way: |row| = 1..5, so p = 0.3, 0.4, 0.5, 0.6, 0.7
    rows = T([[1.0, -2.0, 3.0, -4.0, 5.0]]).repeat(4000, 1)
    out = rank_sampling(rows, 0.5, 0.2, torch.Generator().manual_seed(0))
    probs = T([0.3, 0.4, 0.5, 0.6, 0.7])
    assert_close((out != 0).float().mean(dim=0), probs, atol=0.03, rtol=0)
    kept = out != 0
    assert_close(out[kept], (rows / probs)[kept])  # survivors divided by their own p
    with pytest.raises(ForgeError, match="epsilon"):
        rank_sampling(rows, 0.9, 0.2, torch.Generator())


def test_della_and_della_linear_at_full_density_are_ties_and_task_arithmetic():
    base = torch.zeros(3)
    d1, d2 = T([1.0, -2.0, 3.0]), T([-3.0, 1.0, 1.0])
    gens = [torch.Generator()] * 2
    assert_close(della(base, [d1, d2], weight=[1, 1], density=[1, 1], epsilon=[0.1] * 2,
                       generators=gens, consensus=True), T([-3.0, -2.0, 2.0]))
    assert_close(della(base, [d1, d2], weight=[1, 1], density=[1, 1], epsilon=[0.1] * 2,
                       generators=gens, consensus=False, normalize=False, lambda_=2.0),
                 T([-4.0, -2.0, 8.0]))


def test_slerp_orthogonal_and_colinear_fallback():
    s = math.sin(math.pi / 4)  # theta = 90 degrees, t = 0.5: both coefficients sin(45)/sin(90)
    assert_close(slerp(0.5, T([1.0, 0.0]), T([0.0, 2.0])), T([s, 2 * s]))
    assert_close(slerp(0.0, T([1.0, 0.0]), T([0.0, 2.0])), T([1.0, 0.0]))
    # colinear: lerp of the original vectors
    assert_close(slerp(0.25, T([1.0, 1.0]), T([2.0, 2.0])), T([1.25, 1.25]))


def test_multislerp_normalized_direction_times_mean_norm():
    # unit directions e1, e2 with weights 3:1 -> direction (0.75, 0.25)/|.| = (0.948683, 0.316228)
    # norms 2 and 1 -> weighted mean norm 0.75*2 + 0.25*1 = 1.75
    out = multislerp([T([2.0, 0.0]), T([0.0, 1.0])], weight=[3, 1])
    assert_close(out, 1.75 * T([0.948683, 0.316228]), atol=1e-5, rtol=0)
    base = T([1.0, 1.0])
    assert_close(multislerp([base + T([2.0, 0.0]), base + T([0.0, 1.0])], weight=[3, 1], base=base),
                 base + 1.75 * T([0.948683, 0.316228]), atol=1e-5, rtol=0)
    # antipodal pair with equal weights falls back to the weighted sum
    assert_close(multislerp([T([1.0, 0.0]), T([-1.0, 0.0])], weight=[1, 1]), T([0.0, 0.0]))


def test_model_stock_ratio_from_the_angle_between_task_vectors():
    base = T([0.0, 0.0])
    # task vectors [1,0] and [1,1]: cos = 1/sqrt(2); t = 2c / (1 + c) = 0.828427; mean = [1, 0.5]
    out = model_stock(base, [T([1.0, 0.0]), T([1.0, 1.0])])
    assert_close(out, 0.828427 * T([1.0, 0.5]), atol=1e-5, rtol=0)
    # orthogonal task vectors: cos = 0 -> t = 0 -> the base itself
    assert_close(model_stock(base + 1, [T([2.0, 1.0]), T([1.0, 2.0])]), T([1.0, 1.0]))
    rows = model_stock(torch.zeros(2, 2), [T([[1.0, 0.0], [1.0, 0.0]]), T([[1.0, 1.0], [0.0, 1.0]])],
                       filter_wise=True)
    assert_close(rows, T([[0.828427, 0.414214], [0.0, 0.0]]), atol=1e-5, rtol=0)


def test_passthrough_copies_and_scales():
    x = T([1.0, -2.0])
    assert passthrough(x) is x
    assert_close(passthrough(x, scale=0.5), T([0.5, -1.0]))


def test_top_k_mask_equals_a_stable_sort_including_ties():
    from forgelib.merge.methods.sparsify import magnitude, magnitude_outliers, top_k_mask

    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (200,), generator=gen).float()  # many ties at every cut
    for k in (0, 1, 37, 100, 199, 200):
        expected = torch.zeros(200, dtype=torch.bool)
        expected[torch.argsort(scores, descending=True, stable=True)[:k]] = True
        assert torch.equal(top_k_mask(scores, k), expected)
    delta = torch.randint(-4, 5, (300,), generator=gen).float()
    order = torch.argsort(delta.abs(), stable=True)
    for density, gamma in ((0.5, 0.1), (0.3, 0.0), (0.95, 0.2)):
        n_keep, n_top = int(density * 300), int(gamma * 300)
        n_bottom = max(300 - n_keep - n_top, 0)
        n_top = 300 - n_keep - n_bottom
        expected = torch.zeros(300)
        expected[order[n_bottom: 300 - n_top]] = 1
        assert_close(magnitude_outliers(delta, density, gamma), delta * expected)
    expected = torch.zeros(300)
    expected[torch.argsort(delta.abs(), descending=True, stable=True)[:120]] = 1
    assert_close(magnitude(delta, 0.4), delta * expected)
