"""BitLinear: exact forward at lam=0 and lam=1, straight-through gradients, swapping, the ramp."""

import pytest
import torch
from torch import nn

from forgelib.compress.bitlinear import (BitLinear, quantize_activations, ramp, set_lambda,
                                         swap_bitlinear_for_linear, swap_linear_for_bitlinear,
                                         ternarize_weight)
from forgelib.compress.codecs import bitnet158


def test_activation_quantization_hand_computed():
    # max|x| = 2 -> scale 127/2 = 63.5: 0.5 -> 31.75 -> 32; 1.2 -> 76.2 -> 76; -2 -> -127
    x = torch.tensor([[0.5, -2.0, 1.2]])
    assert torch.allclose(quantize_activations(x), torch.tensor([[32 / 63.5, -2.0, 76 / 63.5]]))


def test_ternarize_matches_the_codec():
    w = torch.tensor([[0.3, -0.05, -0.9], [0.0, 0.2, 0.45]])
    gamma = w.abs().mean()  # 0.3167: 0.3/g = 0.95 -> 1, 0.05/g -> 0, 0.9/g -> -1 (clamped), 0.2/g -> 1
    expected = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]]) * gamma
    assert torch.allclose(ternarize_weight(w), expected)
    assert torch.allclose(bitnet158.decode(bitnet158.encode(w, bitnet158.BitNetConfig())), expected)


def make_layer():
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    layer = BitLinear(6, 4)
    layer.load_state_dict(linear.state_dict())
    return linear, layer


def test_lam_zero_is_the_plain_linear_layer_and_lam_one_is_full_bitnet():
    linear, layer = make_layer()
    x = torch.randn(3, 5, 6)
    layer.lam = 0.0
    assert torch.equal(layer(x), linear(x))
    layer.lam = 1.0
    expected = nn.functional.linear(quantize_activations(x), ternarize_weight(linear.weight), linear.bias)
    assert torch.allclose(layer(x), expected)


def test_straight_through_gradient():
    _, layer = make_layer()
    x = torch.randn(5, 6)
    layer(x).pow(2).sum().backward()
    # STE: dL/dW is computed as if w_q were w, i.e. g^T x_q with g = dL/dy at the quantized forward
    y = nn.functional.linear(quantize_activations(x), ternarize_weight(layer.weight.detach()), layer.bias.detach())
    assert torch.allclose(layer.weight.grad, (2 * y).T @ quantize_activations(x), atol=1e-5)


def test_swap_keeps_parameter_names_and_objects():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weight = model[2][0].weight
    swapped = swap_linear_for_bitlinear(model, lambda name: name != "0")
    assert swapped == ["2.0"] and isinstance(model[2][0], BitLinear) and type(model[0]) is nn.Linear
    assert model[2][0].weight is weight
    set_lambda(model, 0.25)
    assert model[2][0].lam == 0.25
    assert swap_bitlinear_for_linear(model) == ["2.0"] and type(model[2][0]) is nn.Linear
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("step,ramp_steps,lam", [(0, 10, 0.0), (5, 10, 0.5), (10, 10, 1.0), (50, 10, 1.0), (0, 0, 1.0)])
def test_ramp(step, ramp_steps, lam):
    assert ramp(step, ramp_steps) == lam
