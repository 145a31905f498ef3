"""End to end on a tiny Llama: compress, load, generate, decompress, size targets, healing."""

import itertools
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from forgelib.compress.config import CompressConfig
from forgelib.compress.loader import decompress_to_dir, load_compressed
from forgelib.compress.pipeline import CONTAINER_NAME, compress_model
from forgelib.compress.bitlinear import ternarize_weight
from forgelib.compress.config import HealConfig
from forgelib.compress.container import read_container
from forgelib.compress.heal import heal
from forgelib.configtools import from_dict, to_dict
from forgelib.errors import ForgeError
from forgelib.models.build import build_llama, llama_config


def make_evaluate(batch):
    def evaluate(model):
        out = model(**batch)
        hits = (out.logits[:, :-1].argmax(-1) == batch["input_ids"][:, 1:]).float().mean()
        return {"mean": float(hits), "perplexity": float(out.loss.exp())}
    return evaluate


def original_logits(model_dir, ids):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_two_stage_default_pipeline(tiny_model_dir, token_batch, tmp_path):
    out = tmp_path / "compressed"
    config = from_dict(CompressConfig, {"heal": {"steps": 4, "ramp_steps": 2}, "calibration_batches": 2}, "compress")
    stats = compress_model(tiny_model_dir, out, config, evaluate=make_evaluate(token_batch),
                           heal_batches=itertools.repeat(token_batch),
                           calibration_batches=itertools.repeat(token_batch))
    assert json.loads((out / "stats.json").read_text())["final"]["bytes"] == stats["final"]["bytes"]
    for stage in ("stage1", "final"):
        s = stats[stage]
        path = out / stage / CONTAINER_NAME
        assert s["bytes"] == path.stat().st_size
        assert s["fraction_fp32"] == pytest.approx(s["bytes"] / (4 * stats["n_params"]))
        assert s["bits_per_param"] == pytest.approx(8 * s["bytes"] / stats["n_params"])
        assert s["retention"] == pytest.approx(s["test_mean"] / stats["input_test_mean"])
        model = load_compressed(path)
        with torch.no_grad():
            assert torch.isfinite(model(input_ids=token_batch["input_ids"]).logits).all()
            generated = model.generate(token_batch["input_ids"][:2, :4], max_new_tokens=3, do_sample=False)
        assert generated.shape == (2, 7)
    assert stats["stage1"]["groups"]["mlp"]["codec"] == "bitnet158"
    assert stats["stage1"]["groups"]["embeddings"]["codec"] == "seedlm"
    assert stats["final"]["groups"]["attention"]["codec"] == "vptq"
    assert stats["final"]["groups"]["lm_head"]["codec"] == "hyperfn"
    assert stats["final"]["hessians"] == 15  # 2 layers x 7 linear + lm_head (vptq on its ladder)
    assert stats["stage1"]["fraction_fp32"] < 0.25
    assert stats["final"]["input"] == "stage1"
    # trit5 packing: 5 ternary weights per byte plus one fp32 scale per matrix
    assert 1.6 <= stats["stage1"]["payload_bits_per_linear_weight"] < 1.7
    healed = stats["stage1"]["heal"]
    assert healed["steps"] == 4 and healed["retention_after"] == stats["stage1"]["retention"]
    side_files = read_container(out / "final" / CONTAINER_NAME).files
    assert sorted(side_files) == ["generation_config.json", "tokenizer.json"]
    assert side_files["tokenizer.json"] == b'{"model": {"type": "char"}}'


def test_mild_codecs_stay_close_and_keep_reuses_stage1(tiny_model_dir, token_batch, tmp_path):
    config = from_dict(CompressConfig, {
        "stage1": {g: {"codec": "int8"} for g in ("attention", "mlp", "embeddings", "lm_head")} | {"norms": {"codec": "fp32"}},
        "stage2": {"attention": {"codec": "keep"}, "mlp": {"codec": "keep"}, "embeddings": {"codec": "fp16"},
                   "lm_head": {"codec": "fp16"}, "norms": {"codec": "fp32"}},
    }, "compress")
    compress_model(tiny_model_dir, tmp_path / "c", config)
    ids = token_batch["input_ids"]
    reference = original_logits(tiny_model_dir, ids)
    final = tmp_path / "c" / "final" / CONTAINER_NAME
    with torch.no_grad():
        logits = load_compressed(final)(input_ids=ids).logits
    relative_error = float((logits - reference).norm() / reference.norm())
    assert relative_error < 0.01, relative_error  # int8 weights: measured ~0.4%
    stage1 = read_container(tmp_path / "c" / "stage1" / CONTAINER_NAME).entries
    kept = read_container(final).entries["model.layers.0.mlp.up_proj.weight"]
    assert kept.codec == "int8"
    assert kept.payload.tensors["q"].equal(stage1["model.layers.0.mlp.up_proj.weight"].payload.tensors["q"])


def test_stage2_encodes_stage1_output(tiny_model_dir, tmp_path):
    """Stage 2 starts from stage 1's decoded weights: an fp32 stage 2 over an int8 stage 1 ships
    exactly stage 1's weights (not the input's), and keeping stage 1's linear payloads while the
    tables shrink makes the final container smaller than stage 1's."""
    config = from_dict(CompressConfig, {
        "stage1": {g: {"codec": "int8"} for g in ("attention", "mlp", "embeddings", "lm_head")},
        "stage2": {"attention": {"codec": "fp32"}, "mlp": {"codec": "keep"}, "embeddings": {"codec": "hyperfn"},
                   "lm_head": {"codec": "hyperfn"}},
    }, "compress")
    stats = compress_model(tiny_model_dir, tmp_path / "c", config)
    stage1 = load_compressed(tmp_path / "c" / "stage1" / CONTAINER_NAME).state_dict()
    final = load_compressed(tmp_path / "c" / "final" / CONTAINER_NAME).state_dict()
    source = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(final[name], stage1[name]) and not torch.equal(final[name], source[name])
    assert stats["final"]["input"] == "stage1"
    # the final SNR is measured against the input model: a lossless copy of stage 1 keeps its SNR
    assert stats["final"]["groups"]["attention"]["snr_db"] == pytest.approx(stats["stage1"]["groups"]["attention"]["snr_db"])
    smaller = from_dict(CompressConfig, {**to_dict(config), "stage2": {
        "attention": {"codec": "keep"}, "mlp": {"codec": "keep"}, "embeddings": {"codec": "hyperfn"},
        "lm_head": {"codec": "hyperfn"}}}, "compress")
    stats = compress_model(tiny_model_dir, tmp_path / "d", smaller)
    assert stats["final"]["bytes"] < stats["stage1"]["bytes"]


def test_decompress_to_dir_matches_load_compressed(tiny_model_dir, token_batch, tmp_path):
    int8_tables = {"stage1": {"embeddings": {"codec": "int8"}, "lm_head": {"codec": "int8"}}}
    config = from_dict(CompressConfig, int8_tables, "compress")
    compress_model(tiny_model_dir, tmp_path / "c", config, stages=1)
    container = tmp_path / "c" / "final" / CONTAINER_NAME
    hf_dir = decompress_to_dir(container, tmp_path / "hf")
    assert (hf_dir / "tokenizer.json").is_file() and (hf_dir / "README.md").is_file()
    ids = token_batch["input_ids"]
    with torch.no_grad():
        a = load_compressed(container)(input_ids=ids).logits
    assert torch.equal(a, original_logits(hf_dir, ids))
    # the stage directory works as well as the file, as for `forge eval`
    from_dir = decompress_to_dir(container.parent, tmp_path / "hf2")
    assert (from_dir / "model.safetensors").read_bytes() == (hf_dir / "model.safetensors").read_bytes()


def test_target_size_is_met_on_real_bytes(tiny_model_dir, token_batch, tmp_path):
    linear = [{"codec": "vptq", "v": 2, "k": 16}, {"codec": "keep"}, {"codec": "vptq", "v": 8, "k": 16, "codebook_bits": 8}]
    tables = [{"codec": "hyperfn"}, {"codec": "hyperfn", "n_points": 64}]
    ladder = {"attention": linear, "mlp": linear, "embeddings": tables, "lm_head": tables}
    config = from_dict(CompressConfig, {"stage2": {"ladder": ladder}}, "compress")
    # the first rungs take 9.2% of fp32 here: a target of 8.5% forces the walk to step down
    stats = compress_model(tiny_model_dir, tmp_path / "a", config, target_size=0.085,
                           evaluate=make_evaluate(token_batch), search_evaluate=make_evaluate(token_batch))
    final = stats["final"]
    assert final["target"]["met"] and final["bytes"] <= 0.085 * stats["fp32_bytes"]
    assert final["target"]["score"] == "log_perplexity"
    assert final["target"]["path"][-1]["score"] == pytest.approx(math.log(final["perplexity"]))
    assert final["bytes"] == (tmp_path / "a" / "final" / CONTAINER_NAME).stat().st_size
    assert final["target"]["path"][0]["bytes"] > final["bytes"]  # it had to step down
    # stage 1 alone cannot go below ternary linear layers: the walk ends on the smallest rungs
    impossible = compress_model(tiny_model_dir, tmp_path / "b", CompressConfig(), stages=1, target_size=0.01)["final"]
    assert not impossible["target"]["met"]
    assert impossible["target"]["choice"]["embeddings"]["codec"] == "bitnet158"  # the last rung


def test_heal_recovers_a_ternarized_model(token_batch):
    model = build_llama(llama_config(vocab_size=40, hidden_size=32, num_layers=2, num_heads=2), seed=1)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):  # memorise the batch in full precision first
        loss = model(**token_batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def ternarized_loss():
        with torch.no_grad():
            saved = {n: p.clone() for n, p in model.named_parameters() if "layers" in n and p.dim() == 2}
            for n, p in model.named_parameters():
                if n in saved:
                    p.copy_(ternarize_weight(p))
            loss = float(model(**token_batch).loss)
            for n, p in model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
        return loss

    before = ternarized_loss()
    report = heal(model, itertools.repeat(token_batch), HealConfig(steps=40, lr=3e-3, ramp_steps=10),
                  lambda name: "layers" in name, seed=0)
    assert report["modules"] == 14 and all(type(m).__name__ != "BitLinear" for m in model.modules())
    assert ternarized_loss() < 0.2 * before
    assert report["lr_schedule"] == "constant" and report["lr_last"] == 3e-3


def test_heal_without_ternarizing_is_the_same_loop_in_full_precision(token_batch):
    """The control arm: nothing is swapped, the weights train, the loss on the batch falls."""
    model = build_llama(llama_config(vocab_size=40, hidden_size=32, num_layers=1, num_heads=2), seed=1)
    report = heal(model, itertools.repeat(token_batch), HealConfig(steps=30, lr=3e-3, ramp_steps=5),
                  lambda name: "mlp" in name, seed=0, ternarize=False)
    assert report["modules"] == 0 and all(type(m).__name__ != "BitLinear" for m in model.modules())
    assert report["loss_last"] < 0.5 * report["loss_first"]


def test_heal_cosine_schedule_decays_the_rate(token_batch):
    model = build_llama(llama_config(vocab_size=40, hidden_size=32, num_layers=1, num_heads=2), seed=1)
    report = heal(model, itertools.repeat(token_batch), HealConfig(steps=20, lr=2e-3, ramp_steps=5, lr_schedule="cosine"),
                  lambda name: "mlp" in name, seed=0)
    # the last step's rate: 2e-3 * (0.1 + 0.9 * 0.5 * (1 + cos(pi * 19 / 20))), just above the floor
    expected = 2e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 19 / 20)))
    assert report["lr_last"] == pytest.approx(expected, rel=1e-9) and report["lr_last"] < 0.11 * 2e-3


def test_config_parsing_names_bad_keys():
    for raw, key in [({"stage3": {}}, r"compress\.stage3: unknown key"),
                     ({"stage1": {"mlp": {"codec": "keep"}}}, r"compress\.stage1\.mlp: .*only valid in stage2"),
                     ({"stage2": {"mlp": {"codec": "vptq", "v": 0}}}, r"compress\.stage2\.mlp\.v: expected"),
                     ({"stage2": {"mlp": {"codec": "vptq", "vv": 4}}}, r"compress\.stage2\.mlp\.vv: unknown setting"),
                     ({"stage2": {"mlp": {"codec": "zip"}}}, r"compress\.stage2\.mlp\.codec: unknown codec"),
                     ({"heal": {"steps": 10, "ramp_steps": 10}}, r"compress\.heal\.ramp_steps: expected"),
                     ({"heal": {"lr0": 1}}, r"compress\.heal\.lr0: unknown key"),
                     ({"heal": {"lr_schedule": "linear"}}, r"compress\.heal\.lr_schedule: expected one of constant, cosine"),
                     ({"stage2_source": "x"}, r"compress\.stage2_source: expected"),
                     ({"stage2": {"ladder": {"mlp": []}}}, r"compress\.stage2\.ladder\.mlp: expected"),
                     ({"stage2": {"ladder": {"mlp": [{"codec": "vptq", "k": 5}]}}},
                      r"compress\.stage2\.ladder\.mlp\[0\]\.k: expected")]:
        with pytest.raises(ForgeError, match=key):
            from_dict(CompressConfig, raw, "compress")
    config = from_dict(CompressConfig, {"stage2": {"mlp": {"codec": "vptq", "v": 4, "k": 16}}}, "compress")
    assert config.stage2.spec("mlp").settings.v == 4 and config.stage2.spec("attention").codec == "vptq"
    assert from_dict(CompressConfig, to_dict(config), "compress") == config


def test_bad_arguments_are_rejected(tiny_model_dir, tmp_path):
    with pytest.raises(ForgeError, match="--stages"):
        compress_model(tiny_model_dir, tmp_path / "x", stages=3)
    with pytest.raises(ForgeError, match="--target-size"):
        compress_model(tiny_model_dir, tmp_path / "x", target_size=0)
    with pytest.raises(ForgeError, match="heal_batches"):
        compress_model(tiny_model_dir, tmp_path / "x", CompressConfig(heal=HealConfig(steps=2)))
    with pytest.raises(ForgeError, match="config.json"):
        compress_model(tmp_path, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_tied_embeddings_are_stored_once(token_batch, tmp_path):
    config = llama_config(vocab_size=40, hidden_size=32, num_layers=1, num_heads=2)
    config.tie_word_embeddings = True
    build_llama(config, seed=0).save_pretrained(tmp_path / "tied")
    mild = {"stage1": {g: {"codec": "int8"} for g in ("attention", "mlp", "embeddings", "lm_head")}}
    compress_model(tmp_path / "tied", tmp_path / "c", from_dict(CompressConfig, mild, "compress"), stages=1)
    container = tmp_path / "c" / "final" / CONTAINER_NAME
    assert "lm_head.weight" not in read_container(container).entries
    model = load_compressed(container)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = token_batch["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    reference = original_logits(tmp_path / "tied", ids)
    assert float((logits - reference).norm() / reference.norm()) < 0.01


def test_decoding_rounds_to_fp16_except_the_lossless_fp32_codec():
    from forgelib.compress.codecs.registry import REGISTRY, decode_entry
    from forgelib.compress.container import Entry

    weight = torch.tensor([[0.1, 1 / 3, -2.718281828]])
    def entry(codec):
        return Entry(codec, {}, REGISTRY[codec].encode(weight, REGISTRY[codec].config_type()))
    assert torch.equal(decode_entry(entry("fp32")), weight)  # stored lossless on purpose: kept
    bitnet = decode_entry(entry("bitnet158"))
    assert torch.equal(bitnet, bitnet.half().float())
    assert (REGISTRY["bitnet158"].decode(entry("bitnet158").payload) - bitnet).abs().max() < 1e-3


def test_heal_precedes_stage2_when_only_stage2_ternarizes(tiny_model_dir, token_batch, tmp_path):
    """Stage 1 is a 4-bit grid; stage 2 ternarizes the MLP, so the heal trains stage 1's decoded
    weights before stage 2, with the groups stage 2 keeps frozen (their stage-1 payload ships)."""
    config = from_dict(CompressConfig, {
        "stage1": {"attention": {"codec": "int8"}, "mlp": {"codec": "gptq", "bits": 4, "group_size": 32},
                   "embeddings": {"codec": "int8"}, "lm_head": {"codec": "int8"}, "norms": {"codec": "fp16"}},
        "stage2": {"attention": {"codec": "gptq", "bits": 4, "group_size": 32}, "mlp": {"codec": "bitnet158"},
                   "embeddings": {"codec": "keep"}, "lm_head": {"codec": "keep"}, "norms": {"codec": "fp16"}},
        "heal": {"steps": 40, "lr": 3e-3, "ramp_steps": 10}, "calibration_batches": 2,
    }, "compress")
    out = tmp_path / "c"
    stats = compress_model(tiny_model_dir, out, config, evaluate=make_evaluate(token_batch),
                           heal_batches=itertools.repeat(token_batch),
                           calibration_batches=itertools.repeat(token_batch))
    assert "heal" not in stats["stage1"]
    healed = stats["final"]["heal"]
    tables = [n for n in read_container(out / "stage1" / CONTAINER_NAME).entries if "embed" in n or "lm_head" in n]
    assert healed["steps"] == 40 and healed["modules"] == 6 and healed["frozen_tensors"] == len(tables) >= 1
    assert healed["test_mean_after"] == stats["final"]["test_mean"]
    # the heal fits the batch through the ternary projection (measured 40.3 -> 20.2)
    assert stats["final"]["perplexity"] < 0.6 * healed["perplexity_before"], (stats["final"], healed)
    assert stats["final"]["groups"]["mlp"]["codec"] == "bitnet158" and stats["final"]["hessians"] > 0
    stage1 = read_container(out / "stage1" / CONTAINER_NAME).entries
    final = read_container(out / "final" / CONTAINER_NAME).entries
    for name in tables:  # frozen during the heal, and their stage-1 payload ships unchanged
        assert final[name].payload.tensors["q"].equal(stage1[name].payload.tensors["q"])


def test_heal_without_a_ternary_group_names_the_key(tiny_model_dir, token_batch, tmp_path):
    config = from_dict(CompressConfig, {
        "stage1": {g: {"codec": "int8"} for g in ("attention", "mlp", "embeddings", "lm_head")},
        "stage2": {g: {"codec": "keep"} for g in ("attention", "mlp", "embeddings", "lm_head")},
        "heal": {"steps": 4, "ramp_steps": 1}}, "compress")
    with pytest.raises(ForgeError, match=r"compress\.heal\.steps > 0 but no group .* uses codec bitnet158"):
        compress_model(tiny_model_dir, tmp_path / "c", config, heal_batches=itertools.repeat(token_batch))
    assert not (tmp_path / "c").exists()
