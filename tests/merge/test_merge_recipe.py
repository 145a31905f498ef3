"""Recipe parsing: mergekit's parameter evaluation rules and strict key checking."""

from __future__ import annotations

import pytest

from forgelib.errors import ForgeError
from forgelib.merge.recipe import evaluate_setting, parse_recipe


def test_gradients_interpolate_linearly_over_depth():
    # anchors [0, 1, 0.5] span t in [0, 1]; t = 0.25 is halfway between anchors 0 and 1
    assert evaluate_setting([0.0, 1.0, 0.5], "x", 0.25) == pytest.approx(0.5)
    assert evaluate_setting([0.0, 1.0, 0.5], "x", 0.75) == pytest.approx(0.75)
    assert evaluate_setting([0.0, 1.0, 0.5], "x", 1.0) == pytest.approx(0.5)
    assert evaluate_setting([True, False], "x", 0.9) is True  # booleans step, never interpolate
    assert evaluate_setting(0.3, "x", 0.5) == 0.3


def test_filters_pick_the_first_matching_substring():
    setting = [{"filter": "self_attn", "value": [0.0, 1.0]}, {"filter": "mlp", "value": 0.2}]
    assert evaluate_setting(setting, "model.layers.3.self_attn.q_proj.weight", 0.5) == pytest.approx(0.5)
    assert evaluate_setting(setting, "model.layers.3.mlp.up_proj.weight", 0.5) == 0.2
    assert evaluate_setting(setting, "model.norm.weight", 0.5) is None  # falls through to defaults
    assert evaluate_setting(setting + [{"filter": "*", "value": 7}], "model.norm.weight", 0.5) == 7


def test_models_normalize_to_one_slice_with_the_base_appended(family, monkeypatch):
    monkeypatch.chdir(family["ancestor"].parent)
    recipe = parse_recipe({"merge_method": "ties", "base_model": "ancestor", "models": [
        {"model": "child0", "parameters": {"weight": 1}}, {"model": "child1", "parameters": {"weight": 1}}]})
    (only,) = recipe.slices
    assert [s.model for s in only.sources] == ["child0", "child1", "ancestor"]
    assert all(s.layer_range == (0, 2) for s in only.sources)
    assert only.sources[2].path == family["ancestor"].resolve()


@pytest.mark.parametrize("raw, message", [
    ({"models": []}, "missing merge_method"),
    ({"merge_method": "ties"}, "exactly one of 'models' or 'slices'"),
    ({"merge_method": "ties", "models": [], "dtype": "float8"}, "models must be a non-empty list"),
    ({"merge_method": "linear", "models": [{"model": "."}], "tokenizer": {}}, "unsupported key 'tokenizer'"),
    ({"merge_method": "linear", "slices": [{"sources": [{"model": "x", "layer_range": [0, 1]}]}],
      "parameters": {"weight": {"filter": "mlp"}}}, r"parameters\.weight"),
])
def test_bad_recipes_are_explained(raw, message):
    with pytest.raises(ForgeError, match=message):
        parse_recipe(raw)


def test_dtype_and_conditional_values_are_checked(family):
    base = {"merge_method": "linear", "models": [{"model": str(family["child0"]), "parameters": {"weight": 1}}]}
    with pytest.raises(ForgeError, match="dtype: expected one of float32"):
        parse_recipe({**base, "dtype": "float8"})
    with pytest.raises(ForgeError, match=r"weight\[0\]: a conditional parameter needs a 'value'"):
        parse_recipe({**base, "parameters": {"weight": [{"filter": "mlp"}]}})
