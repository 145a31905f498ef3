"""The ``deploy`` stage: ``dist/`` ships the final container three ways, each checked against it.

``dist/`` holds the container itself (Forge's loader runs it), its HF directory ``hf/``
(transformers alone runs it) and ``model.gguf`` (ggml's format, ``deploy.gguf_type``), plus a
model card saying which is which and what each costs in bytes. The container is decoded once; both
exports are read back by transformers and compared with the container's model on the validation
rows (:mod:`forgelib.export.check`). ``metrics/deploy.json`` holds the bytes and those figures.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from forgelib.compress.loader import container_path, load_model_any
from forgelib.errors import ForgeError
from forgelib.export.check import check_rows
from forgelib.export.config import DeployConfig
from forgelib.export.run import export_loaded, source_info
from forgelib.io import atomic_dir, write_json
from forgelib.models.card import write_card

GGUF_NAME, HF_NAME = "model.gguf", "hf"
CHECK_KEYS = ("max_abs_logit_diff", "top1_agreement", "tokenizer_match", "greedy_match", "positions", "texts")


def deploy(config: DeployConfig, *, model_path: str | os.PathLike, data_dir: str | os.PathLike,
           out_dir: str | os.PathLike, metrics_path: str | os.PathLike) -> dict:
    """Write ``out_dir`` (atomically) and ``metrics_path`` from the container at ``model_path``."""
    found = container_path(model_path)
    if found is None:
        raise ForgeError(f"{model_path}: no compressed container (model.forge.safetensors) here; "
                         "deploy ships the compress stage's output (run `dvc repro compress`)")
    rows = check_rows(data_dir, config.prompts_per_task)
    source = source_info(found)
    model, tokenizer = load_model_any(found)
    with atomic_dir(out_dir) as tmp:
        shutil.copyfile(found, tmp / found.name)
        hf = export_loaded(model, tokenizer, "hf", tmp / HF_NAME, source=source, rows=rows,
                           max_new_tokens=config.max_new_tokens)
        gguf = export_loaded(model, tokenizer, "gguf", tmp / GGUF_NAME, source=source, gguf_type=config.gguf_type,
                             rows=rows, max_new_tokens=config.max_new_tokens)
        metrics = {
            "container": {"file": found.name, "bytes": source["bytes"], "decoded_codecs": source["decoded_codecs"]},
            "hf": {"file": f"{HF_NAME}/", "bytes": hf["bytes"], **{k: hf["check"][k] for k in CHECK_KEYS}},
            "gguf": {"file": GGUF_NAME, "bytes": gguf["bytes"], "gguf_type": config.gguf_type,
                     "tensor_types": gguf["tensor_types"], "fallbacks": len(gguf["fallbacks"]),
                     "tokenizer": gguf["tokenizer"],
                     **{k: gguf["check"][k] for k in CHECK_KEYS}},
            "reader": gguf["check"]["reader"],
        }
        write_card(tmp, card(metrics, found))
    write_json(metrics_path, metrics)
    return metrics


def card(metrics: dict, source: Path) -> dict:
    """The model card of ``dist/``: one row per artifact, what runs it, its bytes and its check."""
    container, hf, gguf = metrics["container"], metrics["hf"], metrics["gguf"]
    figures = "max abs logit diff {max_abs_logit_diff:.2g}, top-1 agreement {top1_agreement:.3f}, greedy match {greedy_match:.2f}"
    rows = [
        "| artifact | what it is | runs with | bytes | vs container | logits vs container |",
        "|---|---|---|---:|---:|---|",
        f"| `{container['file']}` | the compressed container (codecs: {', '.join(container['decoded_codecs'])}) "
        f"| Forge (`forge eval`, `forge test`) | {container['bytes']:,} | 1.00x | (the reference) |",
        f"| `{hf['file']}` | Hugging Face directory: the decoded weights in float32, config, tokenizer "
        f"| transformers alone | {hf['bytes']:,} | {hf['bytes'] / container['bytes']:.2f}x | {figures.format(**hf)} |",
        f"| `{gguf['file']}` | GGUF (`llama`), 2-D weights {gguf['gguf_type'].upper()} where they fit, norms F32 "
        f"| GGUF readers (transformers `gguf_file=`) | {gguf['bytes']:,} | {gguf['bytes'] / container['bytes']:.2f}x "
        f"| {figures.format(**gguf)} |",
    ]
    description = "\n".join([
        f"The final compressed model `{source}`, shipped three ways. The container is the smallest; the "
        "other two hold its decoded weights, because Forge's codecs (SeedLM, VPTQ, HyperFn, BitNet's "
        "trit packing) have no GGUF or safetensors type. Each export was read back by "
        f"{metrics['reader']} and compared with the container's model on {hf['texts']} validation "
        f"texts ({hf['positions']} positions).", "", *rows,
    ])
    if not gguf["tokenizer"]["merges"]:
        description += ("\n\nThe GGUF's character-level vocabulary is a byte-level BPE with no merges "
                        "(`tokenizer.ggml.model = gpt2`, scores instead of a merges key, which GGUF cannot store "
                        "empty): transformers reads it; llama.cpp's loader requires a merges key and refuses it.")
    if gguf["tokenizer_match"] < 1:
        description += (f"\n\nThe GGUF's tokenizer encodes {gguf['tokenizer_match']:.1%} of the checked texts as the source "
                        "does: GGUF names its split regex from a fixed list, and none reproduces this tokenizer's "
                        "(with `prepare.number_tokens`, a reader also merges digits inside runs of three or more). "
                        "Use the container or `hf/` where the ids matter.")
    return {"name": "Forge deploy", "description": description, "parents": [str(source)], "metrics": metrics}
