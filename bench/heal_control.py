"""The heal's control arm: the same fine-tune without ternarization.

The ``compress`` stage's heal (:func:`forgelib.compress.heal.heal`) trains the model with its
bitnet158 layers as BitLinear (straight-through estimator) on the train rows, then ternarizes
them. Part of what it buys is plain extra training of a model that had not converged. This script
runs the same function on ``--input`` (the specialized model, plain weights) with
``ternarize=False`` and the same batches (``infinite_batches`` over every task's train rows,
``compress.batch_size``, seed ``compress.seed``), optimizer, schedule, clipping and steps, so no
layer is swapped, and prints the validation and test exact match of
the input, of this full-precision fine-tune, and of the committed compressed containers as
plain weights, side by side. Compression's own cost is then the fine-tuned control minus the
shipped container, not the input minus the container.

    python bench/heal_control.py [--json-out metrics/bench/heal_control.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from forgelib.compress.container import CONTAINER_NAME
from forgelib.compress.heal import heal
from forgelib.compress.loader import load_model_any
from forgelib.config import load_section
from forgelib.data.batching import encode_rows, infinite_batches
from forgelib.data.tasks import load_tasks
from forgelib.eval.evaluate import fast_mean_exact_match
from forgelib.io import write_json
from forgelib.models.hf import load_model
from forgelib.runtime import configure_torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--input", type=Path, default=Path("models/specialized"))
    parser.add_argument("--compressed", type=Path, default=Path("models/compressed"))
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_torch()
    cfg = load_section("compress", args.params)
    tasks = load_tasks(args.data)
    model, tokenizer = load_model(args.input)
    rows = encode_rows(tokenizer, [r for splits in tasks.values() for r in splits["train"]])

    def scores(m) -> dict:
        out = {}
        for split in ("validation", "test"):
            r = fast_mean_exact_match(m, tokenizer, tasks, split=split)
            out[split] = {"mean": r["mean"], "families": r["families"]}
        return out

    result = {"heal": {"steps": cfg.heal.steps, "lr": cfg.heal.lr, "lr_schedule": cfg.heal.lr_schedule},
              "input": scores(model)}
    batches = infinite_batches(rows, batch_size=cfg.batch_size, pad_id=tokenizer.pad_token_id, seed=cfg.seed)
    report = heal(model, batches, cfg.heal, lambda name: False, seed=cfg.seed, ternarize=False)
    result["control_fine_tune"] = {**scores(model), "loss_first": report["loss_first"], "loss_last": report["loss_last"]}
    for stage in ("stage1", "final"):
        path = args.compressed / stage / CONTAINER_NAME
        if path.is_file():
            result[stage] = scores(load_model_any(path)[0])
    print(f"{'model':<20} {'validation':>10} {'test':>8}")
    for name in ("input", "control_fine_tune", "stage1", "final"):
        if name in result:
            print(f"{name:<20} {result[name]['validation']['mean']:10.4f} {result[name]['test']['mean']:8.4f}")
    if args.json_out:
        write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
