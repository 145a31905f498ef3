"""Models on disk: Hugging Face directories with safetensors weights and a model card.

A Forge model directory is what ``AutoModelForCausalLM.from_pretrained`` reads: ``config.json``,
``model.safetensors`` (sharded with an index when large), the tokenizer files, plus a
``README.md`` model card (:mod:`forgelib.models.card`) that says how the model was made.

Every path that reads a model directory goes through :func:`require_model_dir`, which checks
the files before any weight is loaded: config.json parses, every safetensors file has a valid
header and is as long as that header says (a truncated copy or a file overwritten with other
bytes fails here, naming the directory and the file). A tokenizer must fit the model: its
highest token id must be a row of the embedding table.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Mapping

import torch

from forgelib.errors import ForgeError
from forgelib.io import atomic_dir
from forgelib.models.card import write_card

def require_model_dir(path: str | Path, what: str = "model directory") -> Path:
    """``path`` if it is an intact HF model directory, else a ForgeError saying what is wrong there."""
    path = Path(path)
    if not path.is_dir():
        raise ForgeError(f"{path}: {what} not found; pass an existing Hugging Face model directory")
    if not (path / "config.json").is_file():
        raise ForgeError(f"{path}: not a Hugging Face model directory (no config.json)")
    config_dict(path)
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise ForgeError(f"{path}: no *.safetensors weights; Forge reads safetensors only (never pickles)")
    for shard in shards:
        safetensors_header(shard, where=path)
    return path


def config_dict(path: str | Path) -> dict:
    """A model directory's config.json as a dict."""
    file = Path(path) / "config.json"
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ForgeError(f"{path}: config.json is not readable JSON ({_one_line(exc)})") from None
    if not isinstance(config, dict):
        raise ForgeError(f"{path}: config.json is not a JSON object")
    return config


MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit


def safetensors_header(file: Path, *, where: str | Path | None = None) -> dict[str, Any]:
    """The tensor entries of a safetensors file's header, after checking the file is whole.

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's
    dtype, shape and byte range in the data that follows, then the data. A file shorter than
    the header's last byte range is truncated; a header that is not such JSON means the file is
    not safetensors (or was overwritten).
    """
    where = Path(where) if where is not None else file.parent
    size = file.stat().st_size
    corrupt = f"{where}: {file.name} is not a valid safetensors file"
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ForgeError(f"{where}: {file.name} is truncated ({size} bytes, less than a safetensors header)")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise ForgeError(f"{corrupt} (its header claims {length} bytes, the file has {size}): "
                             "truncated or corrupt; copy or re-save the model")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ForgeError(f"{corrupt} (the header is not JSON): corrupt; copy or re-save the model") from None
    if not isinstance(header, dict):
        raise ForgeError(f"{corrupt} (the header is not a JSON object): corrupt; copy or re-save the model")
    tensors = {name: info for name, info in header.items() if name != "__metadata__"}
    try:
        end = max((int(info["data_offsets"][1]) for info in tensors.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise ForgeError(f"{corrupt} (a header entry has no data_offsets): corrupt; copy or re-save the model") from None
    if 8 + length + end > size:
        raise ForgeError(f"{where}: {file.name} is truncated: {size} bytes, its header describes {8 + length + end}; "
                         "copy or re-save the model")
    return tensors


EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


def embedding_rows(model_dir: str | Path) -> int | None:
    """Rows of the input embedding, read from the safetensors headers (None if not found)."""
    model_dir = Path(model_dir)
    shapes: dict[str, list[int]] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        shapes.update({name: info.get("shape") for name, info in safetensors_header(shard, where=model_dir).items()})
    for name, shape in sorted(shapes.items()):
        if name.endswith(EMBEDDING_SUFFIXES) and shape:
            return shape[0]
    return None


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:  # missing or malformed files
        raise ForgeError(f"{path}: cannot load a tokenizer ({_one_line(exc)})") from None
    if tokenizer.pad_token is None:
        # Batched training and generation need a pad id; padded positions are masked out, so
        # reusing <eos> (the usual choice for causal LMs without one) changes no result.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_tokenizer_fits(tokenizer, rows: int, where: str | Path) -> None:
    """Every token id must be a row of the model's embedding table (``rows`` of them).

    A tokenizer may be smaller than the table (tables are often padded to a multiple of 64),
    never larger: its top ids would index past the last row at run time.
    """
    n_ids = max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)
    if n_ids > rows:
        raise ForgeError(
            f"{where}: tokenizer has {n_ids} tokens but the model's embedding has {rows} rows; "
            "use the tokenizer the model was trained with"
        )


def load_weights(path: str | Path, *, dtype: torch.dtype = torch.float32):
    """The causal LM of an HF directory (no tokenizer), in eval mode on CPU."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    path = require_model_dir(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise ForgeError(f"{path}: cannot load the model ({_one_line(exc)})") from None
    return model.eval()


def load_model(path: str | Path, *, dtype: torch.dtype = torch.float32):
    """Load ``(model, tokenizer)`` from an HF directory, in eval mode on CPU."""
    path = require_model_dir(path)
    tokenizer = load_tokenizer(path)
    rows = embedding_rows(path)
    if rows is not None:  # fail before loading weights when the headers already tell
        check_tokenizer_fits(tokenizer, rows, path)
    model = load_weights(path, dtype=dtype)
    check_tokenizer_fits(tokenizer, model.get_input_embeddings().weight.shape[0], path)
    return model, tokenizer


def save_model(model, tokenizer, out_dir: str | Path, *cards: Mapping[str, Any] | None) -> Path:
    """Write ``model`` + ``tokenizer`` + the model card of the deep-merged ``cards`` to ``out_dir`` atomically."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size="2GB")
        tokenizer.save_pretrained(str(tmp))
        write_card(tmp, *cards)
    return out_dir


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (library messages often span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__
