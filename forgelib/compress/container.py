"""The compressed-model container: ONE safetensors file, self-describing, compact and checksummed.

Layout (everything counts towards the file's byte size, which is the size we report). The file
holds three uint8 tensors, so the safetensors header itself stays a few hundred bytes whatever
the number of weights (format 1 stored one tensor per payload part plus JSON metadata: 7-13 KB of
header for the embedded default's 21 weights, more than most groups' payload):

* ``__payload__``: every codec payload tensor (packed indices, codebooks, trits, seeds, norms ...)
  as raw bytes, one after another;
* ``__index__``: zlib-compressed JSON: per weight its codec, an index into ``configs`` (distinct
  codec settings, stored once), the payload ``meta``, and per part ``[dtype, shape, offset,
  nbytes]`` into ``__payload__``; plus ``model_config`` (config.json), ``files`` (name ->
  ``[offset, length]`` in the ``__files__`` blob) and ``info`` (free-form provenance);
* ``__files__``: zlib-compressed bytes of the model directory's side files (tokenizer,
  generation config), so the container alone rebuilds a full HF directory.

The safetensors metadata holds only ``format`` and ``checksum``: the sha256 of the three tensors'
bytes. A flipped byte anywhere, or a truncated file, fails with a ForgeError instead of decoding
to garbage weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save

from forgelib.compress.codecs.base import Payload
from forgelib.errors import ForgeError
from forgelib.models.dtypes import STORAGE_DTYPES

FORMAT = "forge-compressed/2"
CONTAINER_NAME = "model.forge.safetensors"  # the file name inside a stage directory
PAYLOAD_TENSOR, INDEX_TENSOR, FILES_TENSOR = "__payload__", "__index__", "__files__"
_DTYPES = STORAGE_DTYPES


@dataclass
class Entry:
    """One weight: the codec that encoded it, that codec's settings, and its payload."""

    codec: str
    config: dict[str, Any]
    payload: Payload


@dataclass
class Container:
    entries: dict[str, Entry]
    model_config: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    sha = hashlib.sha256()
    for name in (PAYLOAD_TENSOR, INDEX_TENSOR, FILES_TENSOR):
        data = tensors[name].numpy().tobytes()
        sha.update(f"{name}\0{len(data)}\0".encode())
        sha.update(data)
    return sha.hexdigest()


def _serialize(container: Container) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    payload, configs, entries = bytearray(), [], {}
    for name, entry in container.entries.items():
        settings = _compact({"codec": entry.codec, "settings": entry.config})
        if settings not in configs:
            configs.append(settings)
        parts = {}
        for key in sorted(entry.payload.tensors):
            tensor = entry.payload.tensors[key].detach().contiguous().cpu()
            data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
            parts[key] = [str(tensor.dtype).removeprefix("torch."), list(tensor.shape), len(payload), len(data)]
            payload += data
        entries[name] = {"codec": entry.codec, "config": configs.index(settings), "meta": entry.payload.meta,
                         "parts": parts}
    blob, manifest = bytearray(), {}
    for fname in sorted(container.files):
        manifest[fname] = [len(blob), len(container.files[fname])]
        blob += container.files[fname]
    index = {"entries": entries, "configs": [json.loads(c) for c in configs],
             "model_config": container.model_config, "files": manifest, "info": container.info}
    tensors = {PAYLOAD_TENSOR: _bytes_tensor(bytes(payload)),
               INDEX_TENSOR: _bytes_tensor(zlib.compress(_compact(index).encode(), 9)),
               FILES_TENSOR: _bytes_tensor(zlib.compress(bytes(blob), 9))}
    return tensors, {"format": FORMAT, "checksum": _digest(tensors)}


def _file_bytes(container: Container) -> bytes:
    """The container file's bytes, deterministic: safetensors writes the metadata from a hash
    map, so the order of its two keys (and so the file's bytes, not its content) could change
    from one process to the next. The header is rewritten with the metadata keys sorted; it has
    the same length, so every offset stays valid."""
    tensors, metadata = _serialize(container)
    data = save(tensors, metadata=metadata)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    canonical = json.dumps(header, separators=(",", ":")).encode().ljust(length)
    assert len(canonical) == length, "the canonical safetensors header changed length"
    return data[:8] + canonical + data[8 + length:]


def serialized_size(container: Container) -> int:
    """Exact byte size the container would have on disk (serialized in memory)."""
    return len(_file_bytes(container))


def write_container(path: str | os.PathLike, container: Container) -> int:
    """Write atomically (temp file + rename); returns the file's real byte count."""
    data = _file_bytes(container)
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final.stat().st_size


def read_container(path: str | os.PathLike) -> Container:
    """Read and verify a container; any damage raises ForgeError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ForgeError(f"{path}: no such compressed container; run `forge compression compress` first")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            names = sorted(handle.keys())
            tensors = {name: handle.get_tensor(name) for name in names}
    except Exception as err:  # safetensors raises its own error types for every malformed file
        raise ForgeError(f"{path}: not a readable container (truncated or corrupt file): {err}") from None
    if metadata.get("format") != FORMAT:
        hint = "; it was written by an older Forge: re-run the compress stage" if str(
            metadata.get("format", "")).startswith("forge-compressed/") else ""
        raise ForgeError(f"{path}: not a Forge container (format {metadata.get('format')!r}, expected {FORMAT!r}){hint}")
    if set(tensors) != {PAYLOAD_TENSOR, INDEX_TENSOR, FILES_TENSOR} or metadata.get("checksum") != _digest(tensors):
        raise ForgeError(f"{path}: checksum mismatch, the container is corrupt; re-run the compress stage")
    index = json.loads(zlib.decompress(tensors[INDEX_TENSOR].numpy().tobytes()))
    payload = tensors[PAYLOAD_TENSOR].numpy().tobytes()
    blob = zlib.decompress(tensors[FILES_TENSOR].numpy().tobytes())
    files = {name: blob[off : off + n] for name, (off, n) in index["files"].items()}
    entries = {}
    for name, spec in index["entries"].items():
        parts = {}
        for key, (dtype, shape, offset, nbytes) in spec["parts"].items():
            data = bytearray(payload[offset : offset + nbytes])
            parts[key] = (torch.frombuffer(data, dtype=_DTYPES[dtype]) if nbytes else torch.zeros(0, dtype=_DTYPES[dtype])
                          ).reshape(shape)
        entries[name] = Entry(spec["codec"], index["configs"][spec["config"]]["settings"], Payload(parts, spec["meta"]))
    return Container(entries, index["model_config"], files, index["info"])
