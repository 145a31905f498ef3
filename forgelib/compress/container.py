"""The compressed-model container: ONE safetensors file, self-describing and checksummed.

Layout (everything counts towards the file's byte size, which is the size we report):

* tensors ``<weight name>:<payload key>``: every codec payload (packed indices, codebooks,
  trits, seeds, uncompressed norms, ...);
* tensor ``__files__``: zlib-compressed bytes of the model directory's side files (tokenizer,
  generation config), so the container alone rebuilds a full HF directory;
* header metadata (JSON strings): ``format``; ``entries`` (per weight: codec, index into
  ``configs``, payload meta); ``configs`` (distinct codec settings, stored once);
  ``model_config`` (config.json); ``files`` (name -> [offset, length] in the ``__files__`` blob);
  ``info`` (free-form provenance); ``checksum``.

``checksum`` is the sha256 of the other metadata strings and of every tensor's name, dtype, shape
and bytes, in sorted order. A flipped byte anywhere, or a truncated file, fails with a ForgeError
instead of decoding to garbage weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save, save_file

from forgelib.compress.codecs.base import Payload
from forgelib.errors import ForgeError

FORMAT = "forge-compressed/1"
CONTAINER_NAME = "model.forge.safetensors"  # the file name inside a stage directory
FILES_TENSOR = "__files__"
SEP = ":"


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


def _digest(metadata: dict[str, str], tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    sha = hashlib.sha256()
    for key in sorted(metadata):
        if key != "checksum":
            sha.update(f"{key}\0{metadata[key]}\0".encode())
    for name, tensor in tensors:
        sha.update(f"{name}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode())
        sha.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def _serialize(container: Container) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors: dict[str, torch.Tensor] = {}
    configs: list[str] = []
    entries: dict[str, Any] = {}
    for name, entry in container.entries.items():
        if SEP in name:
            raise ForgeError(f"tensor name {name!r} contains {SEP!r}, which the container reserves")
        settings = _compact({"codec": entry.codec, "settings": entry.config})
        if settings not in configs:
            configs.append(settings)
        entries[name] = {"codec": entry.codec, "config": configs.index(settings), "meta": entry.payload.meta}
        for key in sorted(entry.payload.tensors):
            tensors[f"{name}{SEP}{key}"] = entry.payload.tensors[key].contiguous()
    blob, manifest = bytearray(), {}
    for fname in sorted(container.files):
        manifest[fname] = [len(blob), len(container.files[fname])]
        blob += container.files[fname]
    tensors[FILES_TENSOR] = torch.frombuffer(bytearray(zlib.compress(bytes(blob), 9)), dtype=torch.uint8)
    metadata = {
        "format": FORMAT, "entries": _compact(entries), "configs": "[" + ",".join(configs) + "]",
        "model_config": _compact(container.model_config), "files": _compact(manifest),
        "info": _compact(container.info),
    }
    metadata["checksum"] = _digest(metadata, sorted(tensors.items()))
    return tensors, metadata


def serialized_size(container: Container) -> int:
    """Exact byte size the container would have on disk (serialized in memory)."""
    tensors, metadata = _serialize(container)
    return len(save(tensors, metadata=metadata))


def write_container(path: str | os.PathLike, container: Container) -> int:
    """Write atomically (temp file + rename); returns the file's real byte count."""
    tensors, metadata = _serialize(container)
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
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
        raise ForgeError(f"{path}: not a Forge container (format {metadata.get('format')!r}, expected {FORMAT!r})")
    if metadata.get("checksum") != _digest(metadata, sorted(tensors.items())):
        raise ForgeError(f"{path}: checksum mismatch, the container is corrupt; re-run the compress stage")
    entries_json = json.loads(metadata["entries"])
    configs = json.loads(metadata["configs"])
    blob = zlib.decompress(tensors[FILES_TENSOR].numpy().tobytes())
    files = {name: blob[off : off + n] for name, (off, n) in json.loads(metadata["files"]).items()}
    by_weight: dict[str, dict[str, torch.Tensor]] = {name: {} for name in entries_json}
    for key, tensor in tensors.items():
        if key != FILES_TENSOR:
            name, _, part = key.rpartition(SEP)
            if name not in by_weight:
                raise ForgeError(f"{path}: tensor {key!r} belongs to no entry; the container is malformed")
            by_weight[name][part] = tensor
    entries = {name: Entry(spec["codec"], configs[spec["config"]]["settings"], Payload(by_weight[name], spec["meta"]))
               for name, spec in entries_json.items()}
    return Container(entries, json.loads(metadata["model_config"]), files, json.loads(metadata["info"]))
