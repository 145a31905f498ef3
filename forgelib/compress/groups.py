"""Which tensor group a weight belongs to; compression stages assign one codec per group.

Names follow transformers' Llama layout (also Mistral, Qwen2, SmolLM2): ``model.embed_tokens``,
``model.layers.N.self_attn.*``, ``model.layers.N.mlp.*``, ``*norm*`` and ``lm_head``. Every
1-D tensor (norm weights, biases) is in ``norms``: they are tiny and sensitive, and few codecs
make sense on them.
"""

from __future__ import annotations

from forgelib.errors import ForgeError

GROUPS = ("attention", "mlp", "embeddings", "lm_head", "norms")


def group_of(name: str, ndim: int) -> str:
    if ndim <= 1 or "norm" in name:
        return "norms"
    if "embed_tokens" in name:
        return "embeddings"
    if name.startswith("lm_head"):
        return "lm_head"
    if ".self_attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    raise ForgeError(
        f"tensor {name!r} fits no compression group ({', '.join(GROUPS)}); "
        "the architecture is not a supported Llama-style decoder"
    )
