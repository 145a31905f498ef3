"""Stage 2's attention codec, compared on the committed stage-1 container (validation only).

Loads ``models/compressed/stage1`` (what stage 2 takes as its input), collects the attention
layers' calibration Hessians on the batches the ``compress`` stage uses
(:func:`forgelib.compress.run.hessian_batches`), re-encodes the attention with each candidate,
keeps every other entry (and the side files) of
the committed final container, and prints, per candidate, the container's bytes (serialized,
header included) and the validation exact match of the decoded model as plain weights. The
committed final container is printed first, as the reference. Used to choose
``compress.stage2.attention`` (params.yaml's comment); the test split is never read.

Run: ``python bench/stage2_attention.py [--json-out FILE]`` after ``dvc repro``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from forgelib.compress.codecs.registry import decode_entry
from forgelib.compress.config import CodecSpec
from forgelib.compress.container import CONTAINER_NAME, Container, read_container, serialized_size
from forgelib.compress.encode import encode_tensor
from forgelib.compress.groups import group_of
from forgelib.compress.hessian import collect_hessians
from forgelib.compress.loader import load_compressed, load_model_any
from forgelib.compress.run import hessian_batches
from forgelib.config import load_section
from forgelib.data.batching import encode_rows
from forgelib.data.tasks import load_tasks
from forgelib.eval.evaluate import evaluate_model
from forgelib.io import write_json
from forgelib.runtime import configure_torch

CANDIDATES = [
    {"codec": "vptq", "v": 4, "k": 256, "k_res": 16, "codebook_bits": 8},
    {"codec": "gptq", "bits": 4, "group_size": 64},
    {"codec": "gptq", "bits": 3, "group_size": 64},
    {"codec": "gptq", "bits": 4, "group_size": 32},
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--compressed", type=Path, default=Path("models/compressed"))
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_torch()
    cfg = load_section("compress", args.params)
    tasks = load_tasks(args.data)
    stage1_path = args.compressed / "stage1" / CONTAINER_NAME
    final = read_container(args.compressed / "final" / CONTAINER_NAME)
    source, tokenizer = load_model_any(stage1_path)
    rows = encode_rows(tokenizer, [r for splits in tasks.values() for r in splits["train"]])
    params = dict(source.named_parameters())
    attention = [n for n, p in params.items() if group_of(n, p.dim()) == "attention"]
    hessians = collect_hessians(source, hessian_batches(cfg, tokenizer, rows), set(attention),
                                max_batches=cfg.calibration_batches)

    def validation(model) -> float:
        return evaluate_model(model, tokenizer, tasks, split="validation")["mean"]

    results = [{"candidate": "committed final", "bytes": serialized_size(final),
                "validation_mean": validation(load_compressed(args.compressed / "final" / CONTAINER_NAME))}]
    for raw in CANDIDATES:
        spec = CodecSpec.of(raw["codec"], **{k: v for k, v in raw.items() if k != "codec"})
        model = copy.deepcopy(source)
        weights = dict(model.named_parameters())
        entries = dict(final.entries)
        for name in attention:
            entries[name] = encode_tensor(params[name].detach(), "attention", spec, hessian=hessians[name]).entry
            with torch.no_grad():
                weights[name].copy_(decode_entry(entries[name]))
        size = serialized_size(Container(entries, final.model_config, final.files, final.info))
        results.append({"candidate": spec.to_params(), "bytes": size, "validation_mean": validation(model)})
    for r in results:
        print(f"{r['bytes']:>8,} B  validation {r['validation_mean']:.4f}  {r['candidate']}")
    if args.json_out:
        write_json(args.json_out, {"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
