"""A Llama model as one GGUF file, written by ggml's own writer (``gguf.GGUFWriter``).

Layout follows llama.cpp's convert_hf_to_gguf.py for LLaMA (architecture ``llama``):

* tensor names ``token_embd``, ``blk.N.attn_{q,k,v,output}``, ``blk.N.ffn_{gate,up,down}``,
  ``blk.N.{attn,ffn}_norm``, ``output_norm`` and ``output`` (only when the LM head is not tied to
  the embedding: llama.cpp and transformers tie when ``output`` is absent);
* ``attn_q`` and ``attn_k`` rows permuted from Hugging Face's rotary layout (the two halves of
  each head) to GGML's (interleaved pairs): ``reshape(n_head, 2, head_dim / 2, dim)
  .swapaxes(1, 2)``, with the key/value head count for ``attn_k``;
* hyperparameters under ``llama.*``; the tokenizer under ``tokenizer.ggml.*``
  (:mod:`forgelib.export.gguf_vocab`).

Tensor types: 1-D tensors (the norms) are F32. A 2-D weight gets the requested type where it can
hold it: Q8_0 and Q4_0 pack blocks of 32 along a row, so the row length must be a multiple of 32;
TQ1_0 and TQ2_0 pack blocks of 256 ternary values with one fp16 scale, so they take only weights
that are exactly ternary ({-s, 0, +s}: BitNet b1.58's decoded matrices) with rows a multiple of
256. Anything else falls back to F16 and says why. Packing is ``gguf.quants.quantize``.

Forge's codecs (SeedLM, VPTQ, HyperFn, BitNet's trit packing, int8) have no GGUF type: a container
is decoded to dense weights first, and those are written at the chosen type.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, LlamaFileType
from gguf.quants import quantize

from forgelib.errors import ForgeError
from forgelib.export.config import GGUF_TYPES
from forgelib.export.gguf_vocab import add_vocab, gguf_vocab

TYPES = {name: Q[name.upper()] for name in GGUF_TYPES}  # "q8_0" -> GGMLQuantizationType.Q8_0
FILE_TYPES = {Q.F16: LlamaFileType.MOSTLY_F16, Q.F32: LlamaFileType.ALL_F32, Q.Q8_0: LlamaFileType.MOSTLY_Q8_0,
              Q.Q4_0: LlamaFileType.MOSTLY_Q4_0, Q.TQ1_0: LlamaFileType.MOSTLY_TQ1_0, Q.TQ2_0: LlamaFileType.MOSTLY_TQ2_0}
BLOCK = {Q.Q8_0: 32, Q.Q4_0: 32, Q.TQ1_0: 256, Q.TQ2_0: 256}
TERNARY = (Q.TQ1_0, Q.TQ2_0)

GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                "lm_head.weight": "output.weight"}
LAYER_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}
LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight")


@dataclass(frozen=True)
class TensorRecord:
    """One tensor as written: its GGUF name, HF shape, ggml type, and why it is not the requested type."""

    name: str
    shape: tuple[int, ...]
    type: str
    note: str = ""


def gguf_name(hf_name: str) -> str:
    if hf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[hf_name]
    match = LAYER.fullmatch(hf_name)
    if match and match.group(2) in LAYER_NAMES:
        return f"blk.{match.group(1)}.{LAYER_NAMES[match.group(2)]}.weight"
    raise ForgeError(f"GGUF export: no llama.cpp name for tensor {hf_name!r} (biases and extra modules "
                     "are not part of the Llama layout)")


def permute_rotary(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF's rotary row order -> GGML's, per head: (n_head, 2, head_dim/2, dim) -> (n_head, head_dim/2, 2, dim)."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def is_ternary(weight: torch.Tensor) -> bool:
    """True when every value is 0 or +-s for one s (what BitNet b1.58 decodes to)."""
    magnitudes = torch.unique(weight.abs())
    return len(magnitudes[magnitudes > 0]) <= 1


def tensor_type(weight: torch.Tensor, requested: Q) -> tuple[Q, str]:
    """The ggml type ``weight`` is written as, and a note when that is not ``requested``."""
    if weight.dim() == 1:
        return Q.F32, "" if requested == Q.F32 else "1-D: F32"
    row, block = weight.shape[-1], BLOCK.get(requested)
    if block and row % block:
        return Q.F16, f"row {row} not a multiple of {block}: F16"
    if requested in TERNARY and not is_ternary(weight):
        return Q.F16, "not ternary: F16"
    return requested, ""


def write_gguf(model, tokenizer, path: str | os.PathLike, *, gguf_type: str = "f16", name: str = "forge-model") -> list[TensorRecord]:
    """Write ``model`` (a ``LlamaForCausalLM``) and ``tokenizer`` to ``path`` atomically; return what was written."""
    if gguf_type not in TYPES:
        raise ForgeError(f"--gguf-type: unknown type {gguf_type!r}; valid: {', '.join(TYPES)}")
    config = model.config
    if config.model_type != "llama":
        raise ForgeError(f"GGUF export: model_type {config.model_type!r} is not supported; supported: llama")
    rope = getattr(config, "rope_parameters", None) or {"rope_type": "default", "rope_theta": getattr(config, "rope_theta", 10000.0)}
    if rope.get("rope_type", "default") != "default":
        raise ForgeError(f"GGUF export: rope scaling {rope.get('rope_type')!r} is not supported; supported: default")
    requested = TYPES[gguf_type]
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    state = model.state_dict()
    tied = bool(getattr(config, "tie_word_embeddings", False))
    embed_rows = state["model.embed_tokens.weight"].shape[0]

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    writer = GGUFWriter(tmp, "llama")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(embed_rows)
    writer.add_file_type(FILE_TYPES[requested])
    writer.add_quantization_version(2)
    add_vocab(writer, gguf_vocab(tokenizer, embed_rows))

    records = []
    for hf_name, weight in state.items():
        if hf_name == "lm_head.weight" and tied:
            continue
        target = gguf_name(hf_name)
        weight = weight.detach().float()
        if target.endswith("attn_q.weight"):
            weight = permute_rotary(weight, n_head)
        elif target.endswith("attn_k.weight"):
            weight = permute_rotary(weight, n_kv)
        qtype, note = tensor_type(weight, requested)
        data = quantize(weight.numpy().astype(np.float32), qtype)
        writer.add_tensor(target, data, raw_dtype=None if qtype in (Q.F16, Q.F32) else qtype)
        records.append(TensorRecord(target, tuple(weight.shape), qtype.name, note))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return records
