"""Streaming safetensors I/O for the merge engine: read one tensor at a time, write one at a time.

Reading: shapes and dtypes come from the safetensors headers alone (8-byte length + JSON), so a
merge can be planned and checked before any weight is loaded. Each tensor is then read with
``safetensors.safe_open`` and the file is closed again: the memory map is released after every
read, so file pages of N input models never pile up in the process (its resident set stays near
the few tensors being merged).

Writing: a safetensors header lists every tensor's offsets, so once the output tensors' shapes
and dtypes are planned the header is written first and the data is appended tensor by tensor,
or row block by row block for large tensors. The output model is never held in memory either.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Iterable

import torch
from safetensors import safe_open

from forgelib.errors import ForgeError
from forgelib.models.dtypes import SAFETENSORS_CODES
from forgelib.models.hf import config_dict, safetensors_header

DTYPE_CODES = SAFETENSORS_CODES
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}


class ModelReader:
    """The tensors of one Hugging Face model directory (single file or sharded with an index)."""

    def __init__(self, path: Path):
        self.path = path
        self.config = config_dict(path)
        index = path / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = {name: path / shard for name, shard in weight_map.items()}
        elif (path / "model.safetensors").is_file():
            files = {}
        else:
            raise ForgeError(
                f"{path}: no model.safetensors (or index); Forge reads safetensors only, never "
                "pickled weights. Re-save the model with save_pretrained(safe_serialization=True)"
            )
        self.specs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        self.files: dict[str, Path] = {}
        for shard in sorted(set(files.values())) or [path / "model.safetensors"]:
            for name, info in safetensors_header(shard, where=path).items():
                if info["dtype"] not in CODE_DTYPES:
                    raise ForgeError(f"{shard}: tensor {name} has dtype {info['dtype']}, "
                                     "which Forge cannot merge")
                self.specs[name] = (tuple(info["shape"]), CODE_DTYPES[info["dtype"]])
                self.files[name] = shard

    def names(self) -> list[str]:
        return list(self.specs)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.specs[name][0]

    def dtype(self, name: str) -> torch.dtype:
        return self.specs[name][1]

    def load(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """The whole tensor, or only rows ``[start, stop)`` of its first dimension."""
        with safe_open(self.files[name], framework="pt") as handle:
            if rows is None:
                return handle.get_tensor(name)
            return handle.get_slice(name)[rows[0]:rows[1]]

    def nbytes(self) -> int:
        return sum(math.prod(s) * d.itemsize for s, d in self.specs.values())


class StreamingWriter:
    """Write a safetensors file whose tensors arrive one by one, in the planned order."""

    def __init__(self, path: Path, specs: Iterable[tuple[str, tuple[int, ...], torch.dtype]],
                 metadata: dict[str, str] | None = None):
        self.order: list[tuple[str, tuple[int, ...], torch.dtype]] = list(specs)
        header: dict = {"__metadata__": metadata or {"format": "pt"}}
        offset = 0
        for name, shape, dtype in self.order:
            size = math.prod(shape) * dtype.itemsize
            header[name] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + size]}
            offset += size
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
        self.handle = open(path, "wb")
        self.handle.write(struct.pack("<Q", len(blob)) + blob)
        self.next = 0
        self.rows_written = 0  # of the tensor being written, which may arrive in row blocks

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the whole tensor ``name``, or its next block of rows."""
        expected, shape, dtype = self.order[self.next]
        block = tuple(tensor.shape)
        whole = block == shape
        fits = whole or (len(block) == len(shape) > 0 and block[1:] == shape[1:]
                         and self.rows_written + block[0] <= shape[0])
        if name != expected or tensor.dtype != dtype or not fits:
            raise RuntimeError(f"writer expected {expected} {shape} {dtype} (at row "
                               f"{self.rows_written}), got {name} {block} {tensor.dtype}")
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        self.handle.write(memoryview(data.numpy()))
        self.rows_written += block[0] if block else 1
        if whole or self.rows_written == shape[0]:
            self.next, self.rows_written = self.next + 1, 0

    def __enter__(self) -> "StreamingWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.handle.close()
        if exc_type is None and self.next != len(self.order):
            raise RuntimeError(f"writer closed after {self.next} of {len(self.order)} tensors")
