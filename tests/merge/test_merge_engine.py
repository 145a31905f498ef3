"""The streaming engine on three tiny Llama children of one ancestor: every registered method,
parameter resolution (gradients, filters), frankenmerge slices, dtypes, errors and replay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from torch.testing import assert_close
from transformers import AutoTokenizer, LlamaForCausalLM

from forgelib.errors import ForgeError
from forgelib.merge.engine import merge_from_yaml, merge_recipe
from forgelib.merge.methods.registry import REGISTRY
from forgelib.merge.methods.ties import ties
from forgelib.models.card import read_card

CHILDREN = ["child0", "child1", "child2"]


def tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    with safe_open(model_dir / "model.safetensors", framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def recipe_for(method: str, family: dict[str, Path]) -> dict:
    spec = REGISTRY[method]
    if method == "passthrough":  # a frankenmerge: 2 layers of child0 then layer 1 of child1
        return {"merge_method": method, "slices": [
            {"sources": [{"model": str(family["child0"]), "layer_range": [0, 2]}]},
            {"sources": [{"model": str(family["child1"]), "layer_range": [1, 2]}]}]}
    names = CHILDREN[: spec.max_models or 3]
    params = {p.name: (1 / len(names) if p.name == "weight" else 0.5)
              for p in spec.model_params if p.name in ("weight", "density")}
    recipe = {"merge_method": method,
              "models": [{"model": str(family[n]), **({"parameters": params} if params else {})} for n in names]}
    if spec.base != "none":
        recipe["base_model"] = str(family["ancestor"])
    if method == "slerp":
        recipe["parameters"] = {"t": 0.3}
    return recipe


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_method_merges_three_children(method, family, tmp_path):
    out = merge_recipe(recipe_for(method, family), tmp_path / "out", seed=1)
    merged, ancestor = tensors(out), tensors(family["ancestor"])
    layers = 3 if method == "passthrough" else 2
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == layers
    if method != "passthrough":
        assert merged.keys() == ancestor.keys()
    for name, tensor in merged.items():
        assert torch.isfinite(tensor).all(), name
        assert tensor.dtype == torch.float32
        reference = ancestor[name.replace("layers.2.", "layers.1.")]
        assert tensor.shape == reference.shape, name
    model = LlamaForCausalLM.from_pretrained(out)
    assert len(model.model.layers) == layers
    assert torch.isfinite(model(torch.tensor([[1, 5, 6, 7]])).logits).all()
    for name in ("README.md", "recipe.yaml", "tokenizer.json"):
        assert (out / name).is_file()
    assert AutoTokenizer.from_pretrained(out)("12+").input_ids == [5, 6, 14]


def test_engine_applies_the_method_per_tensor_with_the_base_found(family, tmp_path):
    recipe = {"merge_method": "ties", "base_model": str(family["ancestor"]),
              "models": [{"model": str(family[n]), "parameters": {"weight": w, "density": 0.4}}
                         for n, w in zip(CHILDREN, (0.2, 0.5, 0.3))]}
    merged = tensors(merge_recipe(recipe, tmp_path / "out"))
    inputs = {n: tensors(family[n]) for n in ["ancestor", *CHILDREN]}
    for name in ("model.layers.1.mlp.up_proj.weight", "lm_head.weight", "model.norm.weight"):
        expected = ties(inputs["ancestor"][name], [inputs[n][name] for n in CHILDREN],
                        weight=[0.2, 0.5, 0.3], density=[0.4] * 3)
        assert_close(merged[name], expected, rtol=0, atol=0)


def test_gradients_and_filters_follow_mergekit(family, tmp_path):
    anc, child = tensors(family["ancestor"]), tensors(family["child0"])
    base = {"merge_method": "task_arithmetic", "base_model": str(family["ancestor"])}
    # weight gradient [0, 1] over 2 layers: layer 0 (t=0) keeps the ancestor, layer 1 (t=1)
    # becomes child0; embeddings, final norm and lm_head sit at t=0 (as in mergekit 0.1.5)
    graded = tensors(merge_recipe({**base, "models": [
        {"model": str(family["child0"]), "parameters": {"weight": [0.0, 1.0]}}]}, tmp_path / "g"))
    assert_close(graded["model.layers.0.self_attn.q_proj.weight"], anc["model.layers.0.self_attn.q_proj.weight"])
    assert_close(graded["model.embed_tokens.weight"], anc["model.embed_tokens.weight"])
    assert_close(graded["model.layers.1.self_attn.q_proj.weight"], child["model.layers.1.self_attn.q_proj.weight"])
    assert_close(graded["lm_head.weight"], anc["lm_head.weight"])
    assert_close(graded["model.norm.weight"], anc["model.norm.weight"])
    # filters: first matching substring wins, unmatched tensors take the fallback value
    filtered = tensors(merge_recipe({**base, "models": [{"model": str(family["child0"]), "parameters": {
        "weight": [{"filter": "mlp", "value": 1.0}, {"value": 0.0}]}}]}, tmp_path / "f"))
    assert_close(filtered["model.layers.0.mlp.down_proj.weight"], child["model.layers.0.mlp.down_proj.weight"])
    assert_close(filtered["model.layers.0.self_attn.o_proj.weight"], anc["model.layers.0.self_attn.o_proj.weight"])
    # top-level parameters are the default of every model
    defaulted = tensors(merge_recipe({**base, "models": [{"model": str(family["child0"])}],
                                      "parameters": {"weight": 0.5}}, tmp_path / "d"))
    name = "model.layers.1.mlp.up_proj.weight"
    assert_close(defaulted[name], (anc[name] + child[name]) / 2)


def test_frankenmerge_renumbers_layers_from_each_source(family, tmp_path):
    out = merge_recipe(recipe_for("passthrough", family), tmp_path / "out")
    merged, c0, c1 = tensors(out), tensors(family["child0"]), tensors(family["child1"])
    assert_close(merged["model.layers.1.mlp.up_proj.weight"], c0["model.layers.1.mlp.up_proj.weight"])
    assert_close(merged["model.layers.2.mlp.up_proj.weight"], c1["model.layers.1.mlp.up_proj.weight"])
    assert_close(merged["model.embed_tokens.weight"], c0["model.embed_tokens.weight"])  # first slice
    assert_close(merged["lm_head.weight"], c1["lm_head.weight"])  # last slice


def test_dtype_and_seeded_stochastic_merges(family, tmp_path):
    recipe = {**recipe_for("dare_ties", family), "dtype": "float16"}
    a = merge_recipe(recipe, tmp_path / "a", seed=3)
    assert all(t.dtype == torch.float16 for t in tensors(a).values())
    assert json.loads((a / "config.json").read_text())["dtype"] == "float16"
    b = merge_recipe(recipe, tmp_path / "b", seed=3)
    c = merge_recipe(recipe, tmp_path / "c", seed=4)
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(tensors(a)[name], tensors(b)[name])
    assert not torch.equal(tensors(a)[name], tensors(c)[name])


def test_relative_paths_and_recipe_yaml_replays(family, tmp_path, monkeypatch):
    monkeypatch.chdir(family["ancestor"].parent)
    config = tmp_path / "merge.yaml"
    config.write_text(yaml.safe_dump({"merge_method": "dare_linear", "base_model": "ancestor", "models": [
        {"model": n, "parameters": {"weight": 0.3, "density": 0.6}} for n in CHILDREN]}))
    first = merge_from_yaml(config, tmp_path / "first", seed=5)
    assert (first / "recipe.yaml").read_text() == config.read_text()
    card = read_card(first)
    assert card["merge"] == {"method": "dare_linear", "base": "ancestor", "layers": 2, "seed": 5}
    assert card["parents"] == ["ancestor", *CHILDREN] and card["recipe"] == yaml.safe_load(config.read_text())
    assert "forge merge recipe.yaml OUT_DIR --seed 5" in (first / "README.md").read_text()
    replay = merge_from_yaml(first / "recipe.yaml", tmp_path / "replay", seed=5)
    for name, tensor in tensors(first).items():
        assert torch.equal(tensor, tensors(replay)[name])


def test_tied_embeddings_stay_tied(tmp_path):
    from forgelib.models.build import build_llama, llama_config

    config = llama_config(vocab_size=32, hidden_size=16, num_layers=1, num_heads=2)
    config.tie_word_embeddings = True
    for i in range(3):
        model = build_llama(config, seed=i)
        model.save_pretrained(tmp_path / f"m{i}", safe_serialization=True)
    recipe = {"merge_method": "task_arithmetic", "base_model": str(tmp_path / "m0"),
              "models": [{"model": str(tmp_path / f"m{i}"), "parameters": {"weight": 0.5}} for i in (1, 2)]}
    out = merge_recipe(recipe, tmp_path / "out")
    assert "lm_head.weight" not in tensors(out)
    model = LlamaForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_unsupported_keys_are_errors_that_name_them(family, tmp_path):
    good = recipe_for("ties", family)
    bad_cases = {
        "modules": {**good, "modules": {}},
        "lora": {**good, "models": [{**good["models"][0], "lora": "x"}]},
        "residual_weight": {"merge_method": "passthrough", "slices": [
            {"sources": [{"model": str(family["child0"]), "layer_range": [0, 1]}], "residual_weight": 0.1}]},
        "'foo'": {**good, "parameters": {"foo": 1}},
        "normalize": {**good, "models": [{"model": str(family["child0"]), "parameters": {"weight": 1, "normalize": True}}]},
        "union": {**good, "tokenizer_source": "union"},
    }
    for key, recipe in bad_cases.items():
        with pytest.raises(ForgeError, match=key):
            merge_recipe(recipe, tmp_path / "out")
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({**good, "chat_template": "chatml"}))
    with pytest.raises(ForgeError, match=r"bad\.yaml.*chat_template"):
        merge_from_yaml(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_user_errors_name_what_is_wrong(family, tmp_path):
    good = recipe_for("ties", family)
    with pytest.raises(ForgeError, match="missing required parameter 'weight'"):
        merge_recipe({**good, "models": [{"model": str(family["child0"])}]}, tmp_path / "out")
    with pytest.raises(ForgeError, match="resolved to"):
        merge_recipe({**good, "base_model": "no/such/model"}, tmp_path / "out")
    with pytest.raises(ForgeError, match="layer_range"):
        merge_recipe({"merge_method": "passthrough", "slices": [
            {"sources": [{"model": str(family["child0"]), "layer_range": [0, 5]}]}]}, tmp_path / "out")
    with pytest.raises(ForgeError, match="slerp merges 1..1 models"):
        merge_recipe({**recipe_for("slerp", family), "models": [{"model": str(family[n])} for n in CHILDREN]},
                     tmp_path / "out")
    with pytest.raises(ForgeError, match="slerp has no parameter 'weight' \\(its parameters: t\\)"):
        merge_recipe({**recipe_for("slerp", family), "models": good["models"]}, tmp_path / "out")
    # an error while tensors are being written leaves nothing behind
    della = {**recipe_for("della", family), "parameters": {"normalize": True}}
    della["models"][0]["parameters"] = {"weight": 0.3, "density": 0.95, "epsilon": 0.1}
    with pytest.raises(ForgeError, match="epsilon"):
        merge_recipe(della, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_different_architectures_or_vocabularies_are_rejected(family, tmp_path):
    from forgelib.models.build import build_llama, llama_config

    wide = tmp_path / "wide"
    build_llama(llama_config(vocab_size=32, hidden_size=32, num_layers=2, num_heads=2), seed=0) \
        .save_pretrained(wide, safe_serialization=True)
    recipe = recipe_for("task_arithmetic", family)
    recipe["models"][1]["model"] = str(wide)
    with pytest.raises(ForgeError, match=r"ancestor and .*wide differ in config.json `hidden_size`: 16 vs 32"):
        merge_recipe(recipe, tmp_path / "out")
    other_vocab = tmp_path / "other_vocab"
    shutil.copytree(family["child1"], other_vocab)
    tok = json.loads((other_vocab / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (other_vocab / "tokenizer.json").write_text(json.dumps(tok))
    recipe = recipe_for("task_arithmetic", family)
    recipe["models"][1]["model"] = str(other_vocab)
    with pytest.raises(ForgeError, match="other_vocab have different tokenizers"):
        merge_recipe(recipe, tmp_path / "out")


@pytest.mark.parametrize("method", sorted(m for m, spec in REGISTRY.items() if spec.rowwise))
def test_row_blocks_give_the_same_model_as_whole_tensors(method, family, tmp_path, monkeypatch):
    import forgelib.merge.engine as engine

    recipe = recipe_for(method, family)
    whole = tensors(merge_recipe(recipe, tmp_path / "whole", seed=2))
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", 100)  # 6 rows of 16 per block
    assert engine.row_blocks(engine.parse_recipe(recipe), (64, 16))[-2:] == [(54, 60), (60, 64)]
    blocks = tensors(merge_recipe(recipe, tmp_path / "blocks", seed=2))
    for name, tensor in whole.items():
        assert torch.equal(tensor, blocks[name]), name
