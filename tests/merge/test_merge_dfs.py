"""Data-flow merging: recipes that stack layers of several models, and the scale folding."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from transformers import LlamaForCausalLM

from forgelib.errors import ForgeError
from forgelib.merge.dfs import candidate_slots, dfs_recipe
from forgelib.merge.engine import merge_recipe

IDS = torch.tensor([[1, 5, 6, 14, 7, 17, 9]])


def test_candidate_slots_follow_the_papers_layout():
    assert candidate_slots(2, 2, 2) == [(0, 0), (0, 1), (1, 0), (1, 1)] * 2


def test_dfs_path_gives_a_loadable_llama_with_the_path_length(family, tmp_path):
    models = [str(family[n]) for n in ("child0", "child1", "child2")]
    include = [False] * 12
    for slot in (0, 3, 4, 7, 9):  # c0.L0, c1.L1, c2.L0, c0.L1 (2nd repeat), c1.L1 (2nd repeat)
        include[slot] = True
    recipe = dfs_recipe(models, 2, include, [1.0, 1.0, 1.0, 0.8, 1.2] + [1.0] * 7, repeats=2)
    assert [s["sources"][0]["layer_range"] for s in recipe["slices"]] == [[0, 1], [1, 2], [0, 1], [1, 2], [1, 2]]
    model = LlamaForCausalLM.from_pretrained(merge_recipe(recipe, tmp_path / "dfs"))
    assert model.config.num_hidden_layers == len(model.model.layers) == 5
    assert torch.isfinite(model(IDS).logits).all()
    c2 = LlamaForCausalLM.from_pretrained(family["child2"])
    # slot 4 (c2 layer 0, scale 1.2) is the merged model's layer 2; only its branch outputs scale
    assert_close(model.model.layers[2].self_attn.o_proj.weight, 1.2 * c2.model.layers[0].self_attn.o_proj.weight)
    assert_close(model.model.layers[2].mlp.down_proj.weight, 1.2 * c2.model.layers[0].mlp.down_proj.weight)
    assert_close(model.model.layers[2].self_attn.q_proj.weight, c2.model.layers[0].self_attn.q_proj.weight)


def test_a_parents_own_path_is_that_parent(family, tmp_path):
    models = [str(family["child0"]), str(family["child1"])]
    include = [False, False, True, True, False, False, False, False]  # child1's layers, in order
    merged = LlamaForCausalLM.from_pretrained(merge_recipe(dfs_recipe(models, 2, include, [1.0] * 8, repeats=2),
                                                           tmp_path / "same"))
    parent = LlamaForCausalLM.from_pretrained(family["child1"])
    assert_close(merged(IDS).logits, parent(IDS).logits)


def test_branch_scales_equal_the_papers_input_scaling(make_family, tmp_path):
    # With RMSNorm eps ~ 0, scaling layer j's input by w_j == scaling the o_proj/down_proj of
    # layer j and every later layer by 1/w_j, i.e. branch scales s_j = prod_{i<=j} 1/w_i.
    paths = make_family(tmp_path, children=2, scale=0.2, rms_norm_eps=1e-12)
    models = [str(paths["child0"]), str(paths["child1"])]
    include = [True, False, True, True, False, True, False, False]  # c0.L0, c1.L0, c1.L1, c0.L1
    input_scales = [1.0, 0.7, 1.5, 0.9]
    branch, running = [], 1.0
    for w in input_scales:
        running /= w
        branch.append(running)
    slot_scales = [1.0] * 8
    for slot, s in zip([i for i, keep in enumerate(include) if keep], branch):
        slot_scales[slot] = s
    folded = LlamaForCausalLM.from_pretrained(
        merge_recipe(dfs_recipe(models, 2, include, slot_scales, repeats=2), tmp_path / "folded"))
    plain = LlamaForCausalLM.from_pretrained(
        merge_recipe(dfs_recipe(models, 2, include, [1.0] * 8, repeats=2), tmp_path / "plain"))
    for layer, w in zip(plain.model.layers, input_scales):
        layer.register_forward_pre_hook(
            lambda _m, args, kwargs, w=w: ((args[0] * w, *args[1:]), kwargs) if args
            else (args, {**kwargs, "hidden_states": kwargs["hidden_states"] * w}),
            with_kwargs=True)
    assert_close(folded(IDS).logits, plain(IDS).logits, atol=1e-4, rtol=1e-4)
    plain_unhooked = LlamaForCausalLM.from_pretrained(tmp_path / "plain")
    assert (plain_unhooked(IDS).logits - folded(IDS).logits).abs().max() > 1e-2  # the scales matter


def test_dfs_rejects_empty_paths_and_non_positive_scales():
    with pytest.raises(ForgeError, match="keeps no layer"):
        dfs_recipe(["a", "b"], 1, [False, False], [1.0, 1.0], repeats=1)
    with pytest.raises(ForgeError, match="positive"):
        dfs_recipe(["a", "b"], 1, [True, False], [-1.0, 1.0], repeats=1)
    with pytest.raises(ForgeError, match="expected 4 include flags"):
        dfs_recipe(["a", "b"], 1, [True], [1.0], repeats=2)
