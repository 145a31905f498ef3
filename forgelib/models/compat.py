"""Can these HF model directories be combined? Checked from files, before any weights load.

The merge engine (``forge merge``, every EvoMerge candidate) calls :func:`check_compatible` on
a recipe's models before it reads a tensor.

Merging averages tensors element by element, so the models must agree on architecture and on
every dimension, and they must share one vocabulary: token id 17 has to mean the same string in
each, or the merged embedding rows mix unrelated tokens. A tokenizer must also fit its own
model's embedding table. Each failure is a :class:`ForgeError` naming the directories and the
field, raised before a multi-minute stage does anything.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

from forgelib.errors import ForgeError
from forgelib.models.hf import check_tokenizer_fits, config_dict, embedding_rows, load_tokenizer, require_model_dir

ARCHITECTURE_FIELDS = ("model_type", "architectures", "tie_word_embeddings")
SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size")
DEPTH_FIELD = "num_hidden_layers"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
"""A directory without any of these has no tokenizer (mergekit inputs may be weights only)."""


def has_tokenizer(model_dir: Path) -> bool:
    return any((Path(model_dir) / name).is_file() for name in TOKENIZER_FILES)


def _stamp(model_dir: Path) -> tuple:
    """Names, sizes and mtimes of a directory's files: a cache key that changes when they do."""
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in model_dir.iterdir() if p.is_file()))


@functools.lru_cache(maxsize=64)
def _tokenizer(model_dir: Path, stamp: tuple):
    # EvoMerge checks the same parents before every candidate merge; load each tokenizer once.
    return load_tokenizer(model_dir)


def tokenizer_of(model_dir: Path):
    model_dir = Path(model_dir).resolve()
    return _tokenizer(model_dir, _stamp(model_dir))


def check_tokenizer_matches(model_dir: str | Path) -> None:
    """The tokenizer's ids must fit config ``vocab_size``, and that must match the embedding rows."""
    model_dir = require_model_dir(model_dir)
    vocab_size = config_dict(model_dir).get("vocab_size")
    rows = embedding_rows(model_dir)
    if vocab_size is not None and rows is not None and rows != vocab_size:
        raise ForgeError(
            f"{model_dir}: config.json vocab_size is {vocab_size} but the embedding has {rows} rows; "
            "the config does not describe these weights"
        )
    size = rows if rows is not None else vocab_size
    if size is not None and has_tokenizer(model_dir):
        check_tokenizer_fits(tokenizer_of(model_dir), size, model_dir)


def _first_vocab_difference(a: dict[str, int], b: dict[str, int]) -> str:
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} tokens"
    for token, index in sorted(a.items(), key=lambda item: item[1]):
        if b.get(token) != index:
            return f"token {token!r} is id {index} in the first and {b.get(token)} in the second"
    return "the same tokens with different special tokens"


def check_compatible(model_dirs: Sequence[str | Path], *, same_depth: bool = True) -> None:
    """Raise :class:`ForgeError` unless all ``model_dirs`` can be merged tensor by tensor.

    Checks every directory's files (:func:`forgelib.models.hf.require_model_dir`), then compares
    each with the first: architecture, every shape field, the layer count (unless
    ``same_depth`` is False, for layer-stacking merges), and the tokenizer's full token-to-id
    map and special tokens. Each tokenizer is also checked against its own model. Directories
    without a tokenizer are compared on their config and weights only.
    """
    dirs = [require_model_dir(d) for d in model_dirs]
    if not dirs:
        raise ForgeError("model compatibility: no model directories given")
    fields = ARCHITECTURE_FIELDS + SHAPE_FIELDS + ((DEPTH_FIELD,) if same_depth else ())
    reference, ref_config = dirs[0], config_dict(dirs[0])
    for other in dirs[1:]:
        config = config_dict(other)
        for field in fields:
            if ref_config.get(field) != config.get(field):
                raise ForgeError(
                    f"{reference} and {other} differ in config.json `{field}`: "
                    f"{ref_config.get(field)!r} vs {config.get(field)!r}; only models of one architecture "
                    "and size can be merged (fine-tune them from one ancestor)"
                )
    for model_dir in dirs:
        check_tokenizer_matches(model_dir)
    with_tokenizer = [d for d in dirs if has_tokenizer(d)]
    if len(with_tokenizer) < 2:
        return
    first = with_tokenizer[0]
    ref_tok = tokenizer_of(first)
    ref_vocab, ref_special = ref_tok.get_vocab(), ref_tok.all_special_tokens
    for other in with_tokenizer[1:]:
        tok = tokenizer_of(other)
        vocab = tok.get_vocab()
        if vocab != ref_vocab or tok.all_special_tokens != ref_special:
            raise ForgeError(
                f"{first} and {other} have different tokenizers ({_first_vocab_difference(ref_vocab, vocab)}); "
                "models to be merged must share one vocabulary"
            )
