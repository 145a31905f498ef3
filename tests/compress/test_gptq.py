"""The gptq codec (group-wise asymmetric grid + Hessian error feedback) and the calibration
Hessian of a tied output layer.

Figures measured when written (seeded, torch 2.13 CPU): on W 200x300 ~ N(0, 0.02^2) with AR(1)
inputs (rho 0.8, 2000 rows), GPTQ's output error ||X (W - W_hat)^T||^2 is 2.9x lower than
round-to-nearest at 3, 4 and 5 bits (2.5x on 2000 fresh rows); GPTQ's output SNR on fresh rows is
18.3 / 24.9 / 31.3 dB at 3 / 4 / 5 bits.
"""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from forgelib.compress.codecs.registry import get_codec, make_config
from forgelib.compress.hessian import collect_hessians
from forgelib.configtools import FieldError
from forgelib.errors import ForgeError

GPTQ = get_codec("gptq")


def round_trip(w, hessian=None, **settings):
    payload = GPTQ.encode(w, make_config("gptq", settings), hessian=hessian)
    return payload, GPTQ.decode(payload)


def ar1_inputs(n, in_features, rho, generator):
    """Rows of stationary AR(1) features: neighbouring input columns correlate with ``rho``."""
    x = torch.empty(n, in_features)
    x[:, 0] = torch.randn(n, generator=generator)
    for j in range(1, in_features):
        x[:, j] = rho * x[:, j - 1] + math.sqrt(1 - rho**2) * torch.randn(n, generator=generator)
    return x


def output_error(x, w, w_hat):
    return float((x @ (w - w_hat).T).pow(2).sum())


def groups_of(in_features, group_size):
    return [(s, min(s + group_size, in_features)) for s in range(0, in_features, group_size)]


# ---------------------------------------------------------------- the grid


@pytest.mark.parametrize("bits,group_size,use_hessian", [(2, 32, False), (4, 32, False), (3, 16, True)])
def test_weights_already_on_each_groups_grid_decode_exactly(bits, group_size, use_hessian):
    """Each (row, group) is scale * (q - zero) with an fp16-exact scale and q spanning 0..levels:
    the min-max grid recovers that scale and zero, so nothing is lost, and with nothing lost the
    error feedback adds nothing either. 100 columns: the last group holds only 100 % group_size."""
    g = torch.Generator().manual_seed(0)
    levels = (1 << bits) - 1
    out_f, in_f = 12, 100
    spans = groups_of(in_f, group_size)
    scales = torch.tensor([2.0**-7, 3 * 2.0**-10, 5 * 2.0**-9, 2.0**-5])  # exact in fp16
    w = torch.empty(out_f, in_f)
    for r in range(out_f):
        for s, e in spans:
            q = torch.randint(0, levels + 1, (e - s,), generator=g)
            q[0], q[-1] = 0, levels  # the group's min and max are the grid's ends
            zero = int(torch.randint(0, levels + 1, (1,), generator=g))
            scale = scales[int(torch.randint(0, len(scales), (1,), generator=g))]
            w[r, s:e] = scale * (q - zero).float()
    hessian = None
    if use_hessian:
        x = ar1_inputs(400, in_f, 0.8, g)
        hessian = x.T @ x / 400
    _, w_hat = round_trip(w, hessian, bits=bits, group_size=group_size)
    assert float((w - w_hat).abs().max()) == 0.0


def test_without_a_hessian_a_group_is_rounded_to_its_min_max_grid_by_hand():
    """2 bits, one group [-0.3, 0.0, 0.2, 0.6]: lo -0.3, hi 0.6, scale = fp16(0.9 / 3), zero 1,
    so the values become [-s, 0, s, 2s]; a second all-positive group [0.1, 0.4, 0.7, 0.25] gets
    lo clamped to 0: scale fp16(0.7 / 3), zero 0."""
    w = torch.tensor([[-0.3, 0.0, 0.2, 0.6, 0.1, 0.4, 0.7, 0.25]])
    payload, w_hat = round_trip(w, bits=2, group_size=4)
    s1 = float(torch.tensor(0.9 / 3).to(torch.float16))
    s2 = float(torch.tensor(0.7 / 3).to(torch.float16))
    expected = torch.tensor([[-s1, 0.0, s1, 2 * s1, 0.0, 2 * s2, 3 * s2, s2]])
    torch.testing.assert_close(w_hat, expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(payload.tensors["scale"].float(), torch.tensor([[s1, s2]]), rtol=0, atol=0)


def test_without_a_hessian_every_weight_is_within_half_a_step_of_its_value():
    w = torch.randn(40, 70, generator=torch.Generator().manual_seed(3)) * 0.05
    payload, w_hat = round_trip(w, bits=3, group_size=16)
    scale = payload.tensors["scale"].float()[:, torch.arange(70) // 16]  # (out, in)
    assert bool(((w - w_hat).abs() <= scale / 2 * (1 + 1e-5)).all())


@pytest.mark.parametrize("bits", [2, 3])
def test_each_row_group_decodes_to_at_most_2_to_the_bits_values_on_its_stored_grid(bits):
    """The grid is fixed per group before the feedback rounds its columns: whatever the Hessian
    pushes onto a column, its values stay on that group's grid scale * (k - zero), k in 0..levels."""
    g = torch.Generator().manual_seed(1)
    out_f, in_f, group_size = 16, 90, 32  # groups of 32, 32 and 26 columns
    w = torch.randn(out_f, in_f, generator=g) * 0.02
    x = ar1_inputs(500, in_f, 0.9, g)
    payload, w_hat = round_trip(w, x.T @ x / 500, bits=bits, group_size=group_size)
    scales = payload.tensors["scale"].float()
    assert scales.shape == (out_f, 3)
    levels = (1 << bits) - 1
    for r in range(out_f):
        for i, (s, e) in enumerate(groups_of(in_f, group_size)):
            values = w_hat[r, s:e]
            assert values.unique().numel() <= 2**bits
            k = values / scales[r, i]  # = code - zero, an integer in [-levels, levels]
            assert float((k - k.round()).abs().max()) < 1e-4
            assert float(k.max() - k.min()) <= levels


@pytest.mark.parametrize("out_f,in_f,bits,group_size", [(60, 96, 4, 32), (16, 90, 3, 32), (7, 100, 2, 64),
                                                        (5, 33, 8, 64)])
def test_payload_bytes_are_packed_codes_plus_fp16_scales_plus_packed_zeros(out_f, in_f, bits, group_size):
    """A shorter last group still costs a full scale and zero: groups per row = ceil(in / group_size)."""
    w = torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(2))
    payload, w_hat = round_trip(w, bits=bits, group_size=group_size)
    n_groups = math.ceil(in_f / group_size)
    expected = math.ceil(out_f * in_f * bits / 8) + 2 * out_f * n_groups + math.ceil(out_f * n_groups * bits / 8)
    assert payload.nbytes() == expected
    assert payload.tensors["scale"].dtype == torch.float16 and payload.tensors["scale"].shape == (out_f, n_groups)
    assert w_hat.shape == w.shape


def test_bits_per_weight_method_is_bits_plus_scale_and_zero_over_group_size():
    assert make_config("gptq", {"bits": 4, "group_size": 32}).bits_per_weight() == 4 + 20 / 32
    assert make_config("gptq", {"bits": 3, "group_size": 128}).bits_per_weight() == 3 + 19 / 128


# ---------------------------------------------------------------- the Hessian feedback


@pytest.fixture(scope="module")
def correlated_layer():
    """W 200x300 ~ N(0, 0.02^2); calibration and fresh input rows with AR(1) correlation 0.8."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(200, 300, generator=g) * 0.02
    x_cal, x_fresh = ar1_inputs(2000, 300, 0.8, g), ar1_inputs(2000, 300, 0.8, g)
    return w, x_cal, x_fresh


@pytest.mark.parametrize("bits", [3, 4, 5])
def test_hessian_feedback_cuts_output_error_against_round_to_nearest(correlated_layer, bits):
    """Measured 2.9x (calibration rows) and 2.5x (fresh rows) at every bit width."""
    w, x_cal, x_fresh = correlated_layer
    _, w_gptq = round_trip(w, x_cal.T @ x_cal / len(x_cal), bits=bits, group_size=64)
    _, w_rtn = round_trip(w, None, bits=bits, group_size=64)
    assert output_error(x_cal, w, w_rtn) >= 2.0 * output_error(x_cal, w, w_gptq)
    assert output_error(x_fresh, w, w_rtn) >= 1.8 * output_error(x_fresh, w, w_gptq)


def test_output_snr_rises_about_6_db_per_bit(correlated_layer):
    """Measured 18.3, 24.9, 31.3 dB on fresh rows at 3, 4, 5 bits."""
    w, x_cal, x_fresh = correlated_layer
    hessian = x_cal.T @ x_cal / len(x_cal)
    signal = float((x_fresh @ w.T).pow(2).sum())
    snr = []
    for bits in (3, 4, 5):
        _, w_hat = round_trip(w, hessian, bits=bits, group_size=64)
        snr.append(10 * math.log10(signal / output_error(x_fresh, w, w_hat)))
    assert snr[0] >= 16.0
    assert snr[1] - snr[0] >= 4.5 and snr[2] - snr[1] >= 4.5


def test_an_input_that_never_fires_gets_zero_weight():
    """H_jj = 0 means column j never sees a nonzero input: GPTQ drops those weights."""
    g = torch.Generator().manual_seed(4)
    w = torch.randn(8, 40, generator=g) * 0.02
    x = torch.randn(300, 40, generator=g)
    x[:, [5, 17]] = 0.0
    _, w_hat = round_trip(w, x.T @ x / 300, bits=4, group_size=16)
    assert float(w_hat[:, [5, 17]].abs().max()) == 0.0
    assert float(w_hat[:, 6].abs().max()) > 0.0


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("settings,field", [
    ({"bits": 0}, "bits"), ({"bits": 9}, "bits"), ({"group_size": 0}, "group_size"),
    ({"damp": 1.0}, "damp"), ({"damp": -0.1}, "damp"), ({"block_size": 0}, "block_size"),
])
def test_bad_settings_are_rejected_naming_the_dotted_field(settings, field):
    with pytest.raises(FieldError) as info:
        make_config("gptq", settings, where="stage2.mlp")
    assert info.value.field == f"stage2.mlp.{field}"
    assert f"stage2.mlp.{field}: expected" in str(info.value)


def test_a_1d_tensor_is_rejected():
    with pytest.raises(ForgeError, match=r"2-D.*\[12\]"):
        GPTQ.encode(torch.ones(12), make_config("gptq"))


def test_a_hessian_of_the_wrong_shape_is_rejected_naming_both_sizes():
    with pytest.raises(ForgeError, match=r"Hessian shape \[50, 50\] does not match input dim 40"):
        GPTQ.encode(torch.ones(8, 40), make_config("gptq"), hessian=torch.eye(50))


# ---------------------------------------------------------------- the tied output layer's Hessian


def tiny_llama(tied):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                         tie_word_embeddings=tied)
    return LlamaForCausalLM(config)


def padded_batches():
    g = torch.Generator().manual_seed(0)
    batches = []
    for rows, lengths in ((3, [10, 6, 3]), (2, [4, 10])):
        ids = torch.randint(0, 40, (rows, 10), generator=g)
        mask = (torch.arange(10)[None, :] < torch.tensor(lengths)[:, None]).long()
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


@torch.no_grad()
def lm_head_inputs(model, batches):
    """The final (post-norm) hidden states at non-padding positions: what enters lm_head."""
    xs = [model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state[
        b["attention_mask"].bool()] for b in batches]
    return torch.cat(xs)


def test_a_tied_output_layer_hessian_is_filed_under_the_embedding_name():
    model = tiny_llama(tied=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    batches = padded_batches()
    hessians = collect_hessians(model, batches, {"model.embed_tokens.weight"}, max_batches=8)
    x = lm_head_inputs(model, batches)
    assert x.shape == (33, 16)  # 10 + 6 + 3 + 4 + 10 real tokens
    assert set(hessians) == {"model.embed_tokens.weight"}
    torch.testing.assert_close(hessians["model.embed_tokens.weight"], x.T @ x / len(x), rtol=1e-5, atol=1e-5)
    # the padding counts: all 50 positions would give a different matrix
    every = torch.cat([model.model(input_ids=b["input_ids"]).last_hidden_state.reshape(-1, 16).detach()
                       for b in batches])
    assert float((every.T @ every / len(every) - hessians["model.embed_tokens.weight"]).abs().max()) > 1e-2
    # the tied alias is not a second name
    assert collect_hessians(model, batches, {"lm_head.weight"}, max_batches=8) == {}


def test_max_batches_stops_the_accumulation():
    model = tiny_llama(tied=True)
    batches = padded_batches()
    first = collect_hessians(model, batches, {"model.embed_tokens.weight"}, max_batches=1)
    x = lm_head_inputs(model, batches[:1])
    torch.testing.assert_close(first["model.embed_tokens.weight"], x.T @ x / len(x), rtol=1e-5, atol=1e-5)


def test_an_untied_model_has_no_hessian_for_its_embedding_but_one_for_lm_head():
    model = tiny_llama(tied=False)
    batches = padded_batches()
    assert collect_hessians(model, batches, {"model.embed_tokens.weight"}, max_batches=8) == {}
    hessians = collect_hessians(model, batches, {"lm_head.weight"}, max_batches=8)
    x = lm_head_inputs(model, batches)
    torch.testing.assert_close(hessians["lm_head.weight"], x.T @ x / len(x), rtol=1e-5, atol=1e-5)
