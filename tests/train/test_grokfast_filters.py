"""Grokfast filters against hand-computed values; GrokfastAdamW against filter + AdamW."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

from forgelib.train.grokfast import GrokfastAdamW, apply_grad_filter_, gradfilter_ema, gradfilter_ma


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_ema_hand_computed_with_late_parameter():
    # alpha 0.5, lamb 2: mu_1 = g_1, then mu = 0.5 mu + 0.5 g; output g + 2 mu.
    state = {}
    out, state = gradfilter_ema({"a": t(1.0, 2.0)}, state, alpha=0.5, lamb=2.0)
    assert_close(out["a"], t(3.0, 6.0))  # (1 + lamb) * g on the first step
    out, state = gradfilter_ema({"a": t(3.0, 0.0), "b": t(4.0)}, state, alpha=0.5, lamb=2.0)
    assert_close(state["a"], t(2.0, 1.0))
    assert_close(out["a"], t(7.0, 2.0))
    assert_close(out["b"], t(12.0))  # late parameter: its mu starts at its own first gradient
    out, state = gradfilter_ema({"b": t(0.0)}, state, alpha=0.5, lamb=2.0)
    assert_close(state["b"], t(2.0))
    assert_close(out["b"], t(4.0))
    assert_close(state["a"], t(2.0, 1.0))  # no gradient this step: state kept


def test_ema_is_pure():
    grads, state = {"a": t(1.0)}, {"a": t(5.0)}
    gradfilter_ema(grads, state, alpha=0.9, lamb=1.0)
    assert_close(grads["a"], t(1.0))
    assert_close(state["a"], t(5.0))


def test_ma_hand_computed_with_warmup_and_late_parameter():
    state = {}
    out, state = gradfilter_ma({"a": t(1.0)}, state, window_size=2, lamb=3.0)
    assert_close(out["a"], t(1.0))  # window not full yet: unfiltered
    out, state = gradfilter_ma({"a": t(3.0)}, state, window_size=2, lamb=3.0)
    assert_close(out["a"], t(3.0 + 3.0 * 2.0))  # mean(1, 3) = 2
    out, state = gradfilter_ma({"a": t(5.0), "b": t(7.0)}, state, window_size=2, lamb=3.0)
    assert_close(out["a"], t(5.0 + 3.0 * 4.0))  # window slid to (3, 5)
    assert_close(out["b"], t(7.0))  # late parameter warms up on its own window
    assert len(state["a"]["window"]) == 2
    out, _ = gradfilter_ma({"b": t(1.0)}, state, window_size=2, lamb=3.0)
    assert_close(out["b"], t(1.0 + 3.0 * 4.0))


def test_ma_without_warmup_uses_partial_window():
    out, _ = gradfilter_ma({"a": t(2.0)}, {}, window_size=100, lamb=5.0, warmup=False)
    assert_close(out["a"], t(12.0))


def test_apply_grad_filter_rebinds_grad_not_data():
    layer = torch.nn.Linear(2, 1)
    before = copy.deepcopy(layer.state_dict())
    layer(torch.ones(1, 2)).sum().backward()
    raw = layer.weight.grad.clone()
    state = apply_grad_filter_(layer, gradfilter_ema, {}, alpha=0.98, lamb=2.0)
    assert_close(layer.weight.grad, 3.0 * raw)
    assert_close(state["weight"], raw)
    for name, value in layer.state_dict().items():
        assert_close(value, before[name])


def _late_model():
    torch.manual_seed(0)
    return torch.nn.ModuleDict({"early": torch.nn.Linear(3, 3), "late": torch.nn.Linear(3, 1)})


def _loss(model, step, x):
    out = model["early"](x).sum()
    if step >= 2:  # "late" gets its first gradient at step 2
        out = out + model["late"](x).pow(2).sum()
    return out


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_grokfast_adamw_equals_filter_then_adamw(weight_decay):
    reference, fused = _late_model(), _late_model()
    kwargs = dict(lr=1e-2, betas=(0.9, 0.98), weight_decay=weight_decay)
    adamw = torch.optim.AdamW(reference.parameters(), **kwargs)
    grokfast = GrokfastAdamW(fused.parameters(), alpha=0.9, lamb=2.0, **kwargs)
    state = {}
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    for step in range(6):
        for model, opt in ((reference, adamw), (fused, grokfast)):
            opt.zero_grad(set_to_none=True)
            _loss(model, step, x * (step + 1)).backward()
        state = apply_grad_filter_(reference, gradfilter_ema, state, alpha=0.9, lamb=2.0)
        adamw.step()
        grokfast.step()
        for (name, p), q in zip(reference.named_parameters(), fused.parameters()):
            assert_close(q, p, rtol=0, atol=0, msg=f"step {step} {name}")
    assert "grokfast_mu" in grokfast.state[fused["late"].weight]


def test_grokfast_adamw_state_dict_round_trip():
    model = _late_model()
    opt = GrokfastAdamW(model.parameters(), lr=1e-2, lamb=3.0)
    _loss(model, 3, torch.ones(2, 3)).backward()
    opt.step()
    clone = GrokfastAdamW(_late_model().parameters(), lr=1e-2)
    clone.load_state_dict(opt.state_dict())
    assert clone.param_groups[0]["lamb"] == 3.0
    assert_close(clone.state[clone.param_groups[0]["params"][0]]["grokfast_mu"],
                 opt.state[model["early"].weight]["grokfast_mu"])
