"""Build small Llama-architecture causal LMs from scratch (the embedded default's ancestor).

The architecture is transformers' ``LlamaForCausalLM`` so that everything downstream (merging
with mergekit tensor names, GGUF import, compression) works unchanged on real Llama-family
models such as SmolLM2.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def llama_config(
    *,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 128,
    pad_token_id: int = 0,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
) -> LlamaConfig:
    """A Llama config for a tiny model; the MLP is 4x wide unless told otherwise."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        attn_implementation="eager",
    )


def build_llama(config: LlamaConfig, *, seed: int) -> LlamaForCausalLM:
    """Initialise a fresh model deterministically from ``seed``."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.float()
