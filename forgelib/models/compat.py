"""Can these HF model directories be combined? Checked from files, before any weights load.

Merging averages tensors element by element, so the models must agree on architecture and on
every dimension, and they must share one vocabulary: token id 17 has to mean the same string in
each, or the merged embedding rows mix unrelated tokens. A tokenizer must also fit its own
model's embedding table. Each failure is a :class:`ForgeError` naming the directories and the
field, raised before a multi-minute stage does anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from forgelib.errors import ForgeError
from forgelib.models.hf import load_tokenizer, require_model_dir

ARCHITECTURE_FIELDS = ("model_type", "architectures")
SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size")
DEPTH_FIELD = "num_hidden_layers"
EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


def _config(model_dir: Path) -> dict:
    try:
        return json.loads((model_dir / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise ForgeError(f"{model_dir}/config.json: not valid JSON ({exc.msg})") from None


def embedding_rows(model_dir: Path) -> int | None:
    """Rows of the input embedding, read from the safetensors header (None if not found)."""
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
    else:
        weight_map = {}
        for shard in sorted(model_dir.glob("*.safetensors")):
            with safe_open(str(shard), framework="pt") as handle:
                weight_map.update({name: shard.name for name in handle.keys()})
    for name, shard in sorted(weight_map.items()):
        if name.endswith(EMBEDDING_SUFFIXES):
            with safe_open(str(model_dir / shard), framework="pt") as handle:
                return handle.get_slice(name).get_shape()[0]
    return None


def check_tokenizer_matches(model_dir: str | Path) -> None:
    """The tokenizer's ids must fit config ``vocab_size``, and that must match the embedding rows.

    A tokenizer may be smaller than the table (tables are often padded to a multiple of 64),
    never larger: its top ids would index past the last row.
    """
    model_dir = require_model_dir(model_dir)
    vocab_size = _config(model_dir).get("vocab_size")
    rows = embedding_rows(model_dir)
    if vocab_size is not None and rows is not None and rows != vocab_size:
        raise ForgeError(
            f"{model_dir}: config.json vocab_size is {vocab_size} but the embedding has {rows} rows; "
            "the config does not describe these weights"
        )
    size = rows if rows is not None else vocab_size
    n_tokens = len(load_tokenizer(model_dir))
    if size is not None and n_tokens > size:
        raise ForgeError(
            f"{model_dir}: the tokenizer has {n_tokens} tokens but the model's vocabulary has {size} rows; "
            "use the tokenizer the model was trained with"
        )


def _first_vocab_difference(a: dict[str, int], b: dict[str, int]) -> str:
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} tokens"
    for token, index in sorted(a.items(), key=lambda item: item[1]):
        if b.get(token) != index:
            return f"token {token!r} is id {index} in the first and {b.get(token)} in the second"
    return "the same tokens with different special tokens"


def check_compatible(model_dirs: Sequence[str | Path], *, same_depth: bool = True) -> None:
    """Raise :class:`ForgeError` unless all ``model_dirs`` can be merged tensor by tensor.

    Compares each directory with the first: architecture, every shape field, the layer count
    (unless ``same_depth`` is False, for layer-stacking merges), and the tokenizer's full
    token-to-id map and special tokens. Each tokenizer is also checked against its own model.
    """
    dirs = [require_model_dir(d) for d in model_dirs]
    if not dirs:
        raise ForgeError("model compatibility: no model directories given")
    fields = ARCHITECTURE_FIELDS + SHAPE_FIELDS + ((DEPTH_FIELD,) if same_depth else ())
    reference, ref_config = dirs[0], _config(dirs[0])
    for other in dirs[1:]:
        config = _config(other)
        for field in fields:
            if ref_config.get(field) != config.get(field):
                raise ForgeError(
                    f"{reference} and {other} differ in config.json `{field}`: "
                    f"{ref_config.get(field)!r} vs {config.get(field)!r}; only models of one architecture "
                    "and size can be merged (fine-tune them from one ancestor)"
                )
    for model_dir in dirs:
        check_tokenizer_matches(model_dir)
    ref_tok = load_tokenizer(reference)
    ref_vocab, ref_special = ref_tok.get_vocab(), ref_tok.all_special_tokens
    for other in dirs[1:]:
        tok = load_tokenizer(other)
        vocab = tok.get_vocab()
        if vocab != ref_vocab or tok.all_special_tokens != ref_special:
            raise ForgeError(
                f"{reference} and {other} have different tokenizers ({_first_vocab_difference(ref_vocab, vocab)}); "
                "models to be merged must share one vocabulary"
            )
