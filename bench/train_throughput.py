"""Train-step time of the Forge loop with the batch's rows grouped by length (``train.length_groups``).

The embedded suite's rows range from 9 tokens (``x*y%97=z`` with number tokens) to 27 (a
parity row), and one forward pass pads every row to the longest. ``forward_by_length`` runs a
step as several passes, each over rows of similar length (same loss and gradient up to float
rounding). This bench times full optimizer steps (forward, answer loss, backward, AdamW) of the
Forge loop (:func:`forgelib.train.forge_loop.optimize`) for each group count on the same batches,
interleaved step by step so that the machine's drift hits every arm alike, and prints each arm's
median step time and its speed-up over one pass. Each arm trains its own copy of the model.

    python bench/train_throughput.py --groups 1,2,4,8 --batch-size 512 --steps 20
    python bench/train_throughput.py --task-weights mod_add=3,mod_mul=3   # half the batch modular
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forgelib.compress.loader import load_model_any  # noqa: E402
from forgelib.data.tasks import load_tasks  # noqa: E402
from forgelib.train.controllers.base import LoopContext  # noqa: E402
from forgelib.train.forge_loop import optimize  # noqa: E402
from forgelib.train.task_stream import TaskStream  # noqa: E402


def parse_weights(text: str) -> dict[str, float]:
    if not text:
        return {}
    pairs = [item.split("=") for item in text.split(",")]
    return {name: float(value) for name, value in pairs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/quietstar", help="the model the train stage starts from")
    parser.add_argument("--data", default="data")
    parser.add_argument("--groups", default="1,2,4,8", help="group counts to compare; the first is the reference")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per arm (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--task-weights", default="", help="task=weight,... as train.task_weights")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    groups = [int(g) for g in args.groups.split(",")]
    model, tokenizer = load_model_any(args.model)
    stream = TaskStream(load_tasks(args.data), tokenizer, seed=0, weights=parse_weights(args.task_weights))
    arms = {}
    for g in groups:
        copy_ = copy.deepcopy(model).train()
        ctx = LoopContext(model=copy_, tokenizer=tokenizer, stream=stream, length_groups=g,
                          optimizer=torch.optim.AdamW(copy_.parameters(), lr=1e-3))
        arms[g] = {"ctx": ctx, "times": [], "loss": []}
    for step in range(args.warmup + args.steps):
        rows = stream.sample(step, args.batch_size)
        for g, arm in arms.items():
            start = time.perf_counter()
            stats, _ = optimize(arm["ctx"], [], rows, 0.0)
            elapsed = time.perf_counter() - start
            if step >= args.warmup:
                arm["times"].append(elapsed)
            arm["loss"].append(float(stats.loss.detach()))
    batch = stream.collate(stream.sample(0, args.batch_size))
    lengths = batch["attention_mask"].sum(1).float()
    reference = statistics.median(arms[groups[0]]["times"])
    result = {
        "recipe": vars(args),
        "padded_width": int(batch["input_ids"].shape[1]),
        "mean_row_length": float(lengths.mean()),
        "arms": {str(g): {"median_step_ms": 1000 * statistics.median(a["times"]),
                          "speedup": reference / statistics.median(a["times"]),
                          "final_loss": a["loss"][-1],
                          "max_loss_diff_to_reference": max(abs(x - y) for x, y in zip(a["loss"], arms[groups[0]]["loss"]))}
                 for g, a in arms.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"batch {args.batch_size}: padded width {result['padded_width']}, mean row length "
              f"{result['mean_row_length']:.1f} tokens; {args.steps} timed steps per arm, {args.threads} thread(s)")
        print("| length_groups | median step (ms) | speed-up vs " + str(groups[0]) + " | final loss | max loss diff |")
        print("|---:|---:|---:|---:|---:|")
        for g, a in result["arms"].items():
            print(f"| {g} | {a['median_step_ms']:.1f} | {a['speedup']:.2f}x | {a['final_loss']:.4f} | "
                  f"{a['max_loss_diff_to_reference']:.2e} |")
    return result


if __name__ == "__main__":
    main()
