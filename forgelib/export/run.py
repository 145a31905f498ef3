"""``forge export``: one model, as anything ``forge eval`` accepts, out as a GGUF file or an HF directory.

The model loads through :func:`forgelib.compress.loader.load_model_any`, so a compressed container
(the file, or its stage directory) is decoded to dense float32 weights first: SeedLM, VPTQ, HyperFn
(and BitNet's trit packing, int8) have no GGUF type, so the GGUF holds the decoded weights at the
chosen type and the HF directory holds them as float32. The report says which codecs were decoded
and what each file costs in bytes next to the source.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from forgelib.compress.container import read_container
from forgelib.compress.loader import container_path, load_model_any
from forgelib.errors import ForgeError
from forgelib.export.check import check_export, check_rows
from forgelib.export.config import GGUF_TYPES
from forgelib.export.gguf import TensorRecord, write_gguf
from forgelib.models.hf import save_model

FORMATS = ("gguf", "hf")


def source_info(model_path: str | os.PathLike) -> dict:
    """What the source is (``container`` or ``hf``), its name (the directory's), its bytes, and the
    codecs a container decodes."""
    found = container_path(model_path)
    if found is not None:
        codecs = sorted({entry.codec for entry in read_container(found).entries.values()})
        return {"path": str(found), "name": found.resolve().parent.name, "kind": "container", "bytes": found.stat().st_size,
                "decoded_codecs": codecs}
    weights = sorted(Path(model_path).glob("*.safetensors"))
    return {"path": str(model_path), "name": Path(model_path).resolve().name, "kind": "hf",
            "bytes": sum(p.stat().st_size for p in weights)}


def gguf_tokenizer_summary(path: Path) -> dict:
    """The tokenizer keys of a written GGUF, as ggml's reader sees them."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields

    def text(key: str) -> str | None:
        return fields[key].contents() if key in fields else None

    def count(key: str) -> int:
        return len(fields[key].data) if key in fields else 0

    return {"model": text("tokenizer.ggml.model"), "pre": text("tokenizer.ggml.pre"),
            "tokens": count("tokenizer.ggml.tokens"), "merges": count("tokenizer.ggml.merges")}


def path_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_loaded(model, tokenizer, fmt: str, out: str | os.PathLike, *, source: dict, gguf_type: str = "f16",
                  rows: list[dict] | None = None, max_new_tokens: int = 8,
                  on_tensor: Callable[[TensorRecord], None] | None = None) -> dict:
    """Write an already loaded ``model`` / ``tokenizer`` as ``fmt``; check it on ``rows`` when given."""
    out = Path(out)
    report: dict = {"format": fmt, "path": str(out), "source": source}
    if fmt == "gguf":
        records = write_gguf(model, tokenizer, out, gguf_type=gguf_type, name=source["name"])
        counts: dict[str, int] = {}
        for record in records:
            counts[record.type] = counts.get(record.type, 0) + 1
            if on_tensor is not None:
                on_tensor(record)
        report |= {"gguf_type": gguf_type, "tensor_types": counts,
                   "fallbacks": {r.name: r.note for r in records if r.note and not r.note.startswith("1-D")},
                   "tokenizer": gguf_tokenizer_summary(out)}
    else:
        save_model(model, tokenizer, out, {
            "name": f"{source['name']} (exported)",
            "description": f"Exported by `forge export --format hf` from `{source['path']}` ({source['bytes']} bytes): "
                           "plain safetensors, config.json and tokenizer files; transformers loads it with no Forge "
                           "code." + (" The weights are the container's decoded reconstructions, in float32."
                                      if source["kind"] == "container" else ""),
            "parents": [source["path"]],
        })
    report["bytes"] = path_bytes(out)
    report["bytes_vs_source"] = report["bytes"] / source["bytes"] if source["bytes"] else None
    if rows is not None:
        report["check"] = check_export(out, fmt, model, tokenizer, rows, max_new_tokens=max_new_tokens)
    return report


def export_model(model_path: str | os.PathLike, fmt: str, out: str | os.PathLike, *, gguf_type: str | None = None,
                 check_data: str | os.PathLike | None = None, prompts_per_task: int = 8, max_new_tokens: int = 8,
                 on_tensor: Callable[[TensorRecord], None] | None = None) -> dict:
    """Export the model at ``model_path``; with ``check_data`` (a prepared data dir) also check it."""
    if fmt not in FORMATS:
        raise ForgeError(f"--format: unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if gguf_type is not None and fmt != "gguf":
        raise ForgeError("--gguf-type applies to --format gguf only")
    if gguf_type is not None and gguf_type not in GGUF_TYPES:
        raise ForgeError(f"--gguf-type: unknown type {gguf_type!r}; valid: {', '.join(GGUF_TYPES)}")
    if fmt == "gguf" and Path(out).is_dir():
        raise ForgeError(f"{out}: is a directory; --format gguf writes one file, e.g. {Path(out) / 'model.gguf'}")
    if fmt == "hf" and Path(out).is_file():
        raise ForgeError(f"{out}: is a file; --format hf writes a directory")
    if prompts_per_task < 1:
        raise ForgeError(f"--prompts-per-task: expected an integer >= 1, got {prompts_per_task}")
    rows = check_rows(check_data, prompts_per_task) if check_data is not None else None
    model, tokenizer = load_model_any(model_path)
    return export_loaded(model, tokenizer, fmt, out, source=source_info(model_path), gguf_type=gguf_type or "f16",
                         rows=rows, max_new_tokens=max_new_tokens, on_tensor=on_tensor)


def tensor_line(record: TensorRecord) -> str:
    """One row of the per-tensor table ``forge export`` prints on stderr."""
    shape = "x".join(map(str, record.shape))
    return f"{record.name:28s} {shape:>11s}  {record.type:6s} {record.note}".rstrip()

