"""The specialize stage: params checks, the dispatcher, the side files and SpecializedModel, the
SVD cache, and a smoke run of run_specialize writing the metrics contract."""

import pytest
import torch

from forgelib.configtools import from_dict
from forgelib.data.batching import encode_rows
from forgelib.data.config import PrepareConfig
from forgelib.data.prepare import prepare
from forgelib.data.tasks import load_tasks
from forgelib.errors import ForgeError
from forgelib.eval.generate import greedy_answers
from forgelib.models.build import build_llama, llama_config
from forgelib.models.hf import load_model, load_tokenizer, save_model
from forgelib.base.sft import SFTSettings, train_sft
from forgelib.specialize import svf
from forgelib.specialize.config import SpecializeConfig
from forgelib.specialize.dispatch import dispatch_accuracy, dispatch_rows, family_labels, train_dispatcher
from forgelib.specialize.model import SIDE_FILES, SpecializedModel, decode_side_files, encode_side_files, is_specialized
from forgelib.specialize.run import cached_svd, run_specialize

CONTRACT = {"input_test_mean", "test_mean", "test_mean_adapted", "svf", "bake"}
EXPERT_KEYS = {"params", "test", "lora_params", "lora_test", "full_ft_test"}
MIXING_KEYS = {"task", "mixed", "best_single", "unadapted"}
BAKE_KEYS = {"prompted_base", "unprompted_base", "baked", "kl_base", "kl_baked", "drift_kl"}


@pytest.fixture(scope="module")
def two_families(tmp_path_factory):
    """copy (string) + add (arithmetic) at level 1, and a 1-layer model trained 150 steps on them."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("spec")
    prepare(PrepareConfig(tasks=("copy", "add"), default_level=1, n_train=600, n_val=40, n_test=40), root / "data")
    tokenizer = load_tokenizer(root / "data" / "tokenizer")
    model = build_llama(llama_config(vocab_size=len(tokenizer), hidden_size=32, num_layers=1, num_heads=2,
                                     intermediate_size=64, max_position_embeddings=32), seed=0)
    tasks = load_tasks(root / "data")
    rows = [r for t in tasks.values() for r in t["train"]]
    train_sft(model, encode_rows(tokenizer, rows), SFTSettings(steps=150, lr=1e-2, batch_size=64), pad_id=tokenizer.pad_token_id)
    save_model(model, tokenizer, root / "model", {"name": "two-families"})
    return root


def smoke_config(**svf_overrides) -> SpecializeConfig:
    svf_params = {"steps": 8, "batch_size": 16, "warmup_steps": 2, "lora": {"lr_grid": [0.01]},
                  "dispatch": {"steps": 40, "rows_per_family": 128}, "mixing": {"shots": 8, "test_examples": 16, "iterations": 2,
                                                        "population": 8, "elite_fraction": 0.25}}
    svf_params.update(svf_overrides)
    bake = {"steps": 4, "prompts": 16, "trajectories": 1, "curve_points": 2, "shots": [1], "draws": 1,
            "drift_limit": 8, "eval_limit": 16, "batch_size": 8, "warmup_steps": 1}
    return from_dict(SpecializeConfig, {"seed": 0, "svf": svf_params, "bake": bake}, "specialize")


@pytest.mark.parametrize("params, key", [
    ({"svf": {"method": "sgd"}}, "specialize.svf.method"),
    ({"svf": {"steps": 0}}, "specialize.svf.steps"),
    ({"svf": {"lora": {"rank": 0}}}, "specialize.svf.lora.rank"),
    ({"svf": {"mixing": {"task": "no_such_task"}}}, "specialize.svf.mixing.task"),
    ({"svf": {"samples": 100}}, "specialize.svf.samples"),
    ({"svf": {"stepz": 3}}, "specialize.svf.stepz"),
])
def test_bad_params_name_the_key(params, key):
    with pytest.raises(ForgeError, match=key.replace(".", r"\.")):
        from_dict(SpecializeConfig, params, "specialize")


def test_dispatcher_learns_the_families(two_families):
    model, tokenizer = load_model(two_families / "model")
    tasks = load_tasks(two_families / "data")
    labels = family_labels(["string", "arithmetic"], tokenizer)
    assert labels == {"string": "s", "arithmetic": "a"}
    assert len(dispatch_rows(tasks, labels, split="train", per_family=256, seed=0)) == 512
    factors = svf.compute_svd(model)
    untrained = dispatch_accuracy(model, tokenizer, factors, svf.init_expert(factors), 2.0, tasks, labels)
    dispatcher = train_dispatcher(model, tokenizer, factors, tasks, labels, steps=120, lr=0.3, batch_size=64,
                                  rows_per_family=256, max_mult=2.0, grad_clip=1.0, warmup_steps=5, seed=0)
    trained = dispatch_accuracy(model, tokenizer, factors, dispatcher, 2.0, tasks, labels, split="test")
    assert trained["n"] == 80
    # measured when written: 0.425 before (chance is 0.5), 0.9625 after
    assert trained["accuracy"] >= 0.9 and trained["accuracy"] >= untrained["accuracy"] + 0.3, (untrained, trained)


def test_side_files_round_trip_and_answers_are_adapted_generation(two_families):
    model, tokenizer = load_model(two_families / "model")
    tasks = load_tasks(two_families / "data")
    factors = svf.compute_svd(model)
    g = torch.Generator().manual_seed(0)
    experts = {f: {n: torch.randn(fa.s.shape, generator=g) for n, fa in factors.items()} for f in ("string", "arithmetic")}
    labels = {"string": "s", "arithmetic": "a"}
    dispatcher = train_dispatcher(model, tokenizer, factors, tasks, labels, steps=60, lr=0.3, batch_size=64,
                                  rows_per_family=256, max_mult=2.0, grad_clip=1.0, warmup_steps=5, seed=0)
    side = encode_side_files({"families": list(experts), "labels": labels, "max_mult": 2.0, "weights": list(factors)},
                             experts, dispatcher)
    meta, decoded, decoded_dispatcher = decode_side_files(side)
    for family, expert in experts.items():
        for name, z in expert.items():
            assert torch.equal(decoded[family][name], z.half().float())  # fp16 on disk
    spec = SpecializedModel.from_parts(model, tokenizer, side)
    prompts = [r["prompt"] for n in tasks for r in list(tasks[n]["test"])[:12]]
    routes = spec.dispatch(prompts)
    got = spec.answers(prompts, max_new_tokens=8)
    for family in set(routes):
        idx = [i for i, r in enumerate(routes) if r == family]
        with svf.svf_applied(model, spec.svd, decoded[family], 2.0):
            want = greedy_answers(model, tokenizer, [prompts[i] for i in idx], max_new_tokens=8)
        assert [got[i] for i in idx] == want
    with pytest.raises(ForgeError, match="svf_experts.safetensors"):
        SpecializedModel.from_parts(model, tokenizer, {SIDE_FILES[0]: side[SIDE_FILES[0]]})


def test_zero_experts_evaluate_like_the_plain_model(two_families):
    """With every z = 0 the adapted model is the model: SpecializedModel.evaluate must give
    evaluate_model's figures (same shape, same scoring helpers)."""
    from forgelib.eval.evaluate import evaluate_model

    model, tokenizer = load_model(two_families / "model")
    tasks = load_tasks(two_families / "data")
    factors = svf.compute_svd(model)
    zero = svf.init_expert(factors)
    side = encode_side_files({"families": ["string", "arithmetic"], "labels": {"string": "s", "arithmetic": "a"},
                              "max_mult": 2.0, "weights": list(factors)}, {"string": zero, "arithmetic": zero}, zero)
    adapted = SpecializedModel.from_parts(model, tokenizer, side).evaluate(tasks, limit=24)
    plain = evaluate_model(model, tokenizer, tasks, limit=24)
    assert adapted["tasks"] == plain["tasks"] and adapted["families"] == plain["families"]
    assert adapted["perplexity"] == pytest.approx(plain["perplexity"], rel=1e-4)
    assert 0.0 <= adapted["dispatch_accuracy"] <= 1.0


def test_svd_cache_is_reused_until_the_weights_change(two_families, tmp_path):
    model, _ = load_model(two_families / "model")
    first, reused = cached_svd(model, tmp_path / "svd")
    assert not reused and (tmp_path / "svd" / "svd.safetensors").is_file()
    again, reused = cached_svd(model, tmp_path / "svd")
    assert reused and all(torch.equal(again[n].s, first[n].s) for n in first)
    # and in the fresh SVD's order (the model's), not the file's sorted one: experts are stored and
    # clipped in this order, so a reused cache must train the same bytes as a fresh SVD
    assert list(again) == list(first) == svf.adapted_weight_names(model) != sorted(first)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(2.0)
    changed, reused = cached_svd(model, tmp_path / "svd")
    name = "model.layers.0.mlp.up_proj.weight"
    assert not reused
    torch.testing.assert_close(changed[name].s, 2 * first[name].s)


def test_stage_smoke_writes_the_contract(two_families, tmp_path):
    out = tmp_path / "specialized"
    metrics = run_specialize(smoke_config(), data_dir=two_families / "data", input_dir=two_families / "model",
                             out_dir=out, svd_dir=tmp_path / "svd", metrics_path=tmp_path / "m.json",
                             plots_dir=tmp_path / "plots")
    assert CONTRACT <= set(metrics)
    assert set(metrics["svf"]["experts"]) == {"string", "arithmetic"}
    for report in metrics["svf"]["experts"].values():
        assert EXPERT_KEYS <= set(report)
        assert report["params"] == 224 and report["lora_params"] == 2176 and report["full_ft_params"] > 2176
        assert set(report["methods"]) == {"ce", "reinforce"}
        assert all(0.0 <= report[k] <= 1.0 for k in ("test", "lora_test", "full_ft_test"))
    assert MIXING_KEYS <= set(metrics["svf"]["mixing"])
    assert metrics["svf"]["mixing"]["task"] == "sort_reverse"
    assert 0.0 <= metrics["svf"]["dispatch_accuracy"] <= 1.0
    assert BAKE_KEYS <= set(metrics["bake"])
    assert is_specialized(out) and all((out / name).is_file() for name in SIDE_FILES)
    assert (tmp_path / "m.json").is_file()
    assert {"svf_experts.tsv", "svf_training.tsv", "mixing_cem.tsv", "bake_curve.tsv"} <= {
        p.name for p in (tmp_path / "plots").iterdir()}
    reloaded = SpecializedModel.load(out).evaluate(load_tasks(two_families / "data"))
    assert reloaded["mean"] == pytest.approx(metrics["test_mean_adapted"])
    plain, _ = load_model(out)  # plain transformers: the baked weights, no experts
    assert sum(p.numel() for p in plain.parameters()) == metrics["svf"]["experts"]["string"]["full_ft_params"]


def test_stage_with_everything_off_passes_the_model_through(two_families, tmp_path):
    cfg = from_dict(SpecializeConfig, {"svf": {"enabled": False}, "bake": {"enabled": False}}, "specialize")
    metrics = run_specialize(cfg, data_dir=two_families / "data", input_dir=two_families / "model",
                             out_dir=tmp_path / "out", svd_dir=tmp_path / "svd", metrics_path=None,
                             plots_dir=tmp_path / "plots")
    assert metrics["svf"] is None and metrics["bake"] is None
    assert metrics["test_mean_adapted"] == metrics["test_mean"] == metrics["input_test_mean"]
    assert not is_specialized(tmp_path / "out")
    # every plot dvc.yaml declares exists, as its header alone (dvc repro fails on a missing one)
    assert {p.name: p.read_text().count("\n") for p in (tmp_path / "plots").iterdir()} == {
        "svf_experts.tsv": 1, "mixing_cem.tsv": 1, "bake_curve.tsv": 1}


def test_families_in_worker_processes_give_the_serial_result(two_families, tmp_path, monkeypatch):
    """build_svf trains each family's experts in a worker process (forgelib.runtime.worker_pool):
    experts, reports and curves must equal the one-worker run's, bit for bit."""
    from forgelib.specialize.run import build_svf

    model, tokenizer = load_model(two_families / "model")
    tasks = load_tasks(two_families / "data")
    svd = svf.compute_svd(model)
    cfg = smoke_config(compare_methods=False, lora={"enabled": False}, full_ft={"enabled": False},
                       mixing={"enabled": False}).svf
    out = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("FORGE_WORKERS", workers)
        block, experts, _, _ = build_svf(model, tokenizer, tasks, svd, cfg, seed=0, plots_dir=tmp_path / workers)
        out[workers] = (block, experts, (tmp_path / workers / "svf_training.tsv").read_text())
    def untimed(block):  # wall seconds are the only figure allowed to differ
        return {f: {**r, "methods": {m: {k: v for k, v in s.items() if k != "seconds"} for m, s in r["methods"].items()}}
                for f, r in block["experts"].items()}

    assert untimed(out["1"][0]) == untimed(out["2"][0])
    assert out["1"][0]["dispatch_accuracy"] == out["2"][0]["dispatch_accuracy"]
    for family in ("string", "arithmetic"):
        for name, z in out["1"][1][family].items():
            assert torch.equal(z, out["2"][1][family][name]), (family, name)
    assert out["1"][2] == out["2"][2] and out["1"][2].count("\n") > 2
