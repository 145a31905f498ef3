"""Ablations of the Forge loop's enhancements: each one on vs off, same seeds, with a spread.

Each enhancement is measured on the metric its original claim names:

- ``edge`` (edge-of-chaos curriculum) -> sample efficiency: the mean validation exact match over
  the run's evaluations (area under the learning curve: higher means fewer examples for the same
  accuracy), training examples until validation accuracy first gains ``--target`` over the
  starting model (the cap when never; such seeds are counted), and the final accuracy. Both arms
  draw fresh generator examples (``source: generate``): off at the suite's levels, on at the
  curriculum's level (1 .. max_level).
- ``self_model`` (self-model head, arXiv 2407.10188) -> complexity: L2 norm of all weights and
  the standard deviation of the transformer blocks' weight matrices, plus validation accuracy.
- ``dreams`` (dream cycles) -> hard-example accuracy: exact match on the validation examples of
  the suite's highest level, plus validation accuracy. The on arm also takes the dream phases'
  extra optimizer steps; they are reported.

The Forge loop trains the previous phase's model, so every run starts from one shared base: a
tiny Llama pretrained once with the plain SFT loop on levels 1-2 of the suite (or ``--model-path``,
an HF model directory). The suite mixes levels 1..3 of copy, reverse, parity and add, generated
with the task generators; level 3 is the "hard" set. Runs use
:func:`forgelib.train.forge_loop.train_model`; the table gives mean +- std over seeds of each arm
and of the paired difference (on - off, same seed).

    python bench/ablations.py --seeds 0,1,2 --steps 200
    python bench/ablations.py --ablations "" --overhead --steps 300   # step-time overhead only
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict

from forgelib.configtools import from_dict
from forgelib.data.batching import encode_rows
from forgelib.data.tasks import generate
from forgelib.data.tokenizer import build_char_tokenizer
from forgelib.models.build import build_llama, llama_config
from forgelib.eval.evaluate import score_rows
from forgelib.train.config import TrainConfig
from forgelib.train.forge_loop import eval_subsets, evaluate_in_loop, train_model
from forgelib.base.sft import SFTSettings, train_sft

SUITE = ("copy", "reverse", "parity", "add")
LEVELS = (1, 2, 3)
BASE = {"edge": {"source": "generate"}, "self_model": {}, "dreams": {}}
ABLATIONS = {
    "edge": {"source": "generate", "edge": {"enabled": True, "window": 64, "min_samples": 32, "update_every": 10}},
    "self_model": {"self_model": {"enabled": True, "weight": 0.1}},
    "dreams": {"dreams": {"enabled": True, "every": 50, "steps": 5, "buffer_size": 128, "self_prompts": 64},
               "temperature": {"enabled": True}},
}
METRICS = {
    "edge": ("mean_val_acc", "examples_to_target", "val_acc"),
    "self_model": ("param_l2", "weight_std", "val_acc"),
    "dreams": ("hard_acc", "val_acc", "dream_steps"),
}


def build_suite(n_train: int, n_val: int) -> dict[str, DatasetDict]:
    """Per task and level: held-out prompts first, then train, from one seeded distinct stream."""
    suite = {}
    for task in SUITE:
        splits = {"train": [], "validation": [], "test": []}
        for level in LEVELS:
            rows = generate(task, level, n_train + 2 * n_val, seed=0)
            held = min(2 * n_val, len(rows) // 3)  # small levels keep two thirds for training
            splits["validation"] += rows[: held // 2]
            splits["test"] += rows[held // 2 : held]
            splits["train"] += rows[held:]
        for rows in splits.values():  # mix levels, so a limited in-loop evaluation sees all of them
            random.Random(0).shuffle(rows)
        suite[task] = DatasetDict({k: Dataset.from_list(v) for k, v in splits.items()})
    return suite


def pretrained_base(suite, tokenizer, steps: int):
    model = build_llama(llama_config(vocab_size=len(tokenizer), hidden_size=64, num_layers=2, num_heads=4), seed=0)
    rows = [r for splits in suite.values() for r in splits["train"] if r["level"] < max(LEVELS)]
    train_sft(model, encode_rows(tokenizer, rows), SFTSettings(steps=steps, lr=3e-3, batch_size=64), pad_id=0,
              desc="base")
    return model


def weight_stats(model) -> dict[str, float]:
    everything = torch.cat([p.detach().flatten() for p in model.parameters()])
    blocks = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if ".layers." in n and p.dim() == 2])
    return {"param_l2": float(everything.norm()), "weight_std": float(blocks.std())}


def run_arm(base, suite, tokenizer, params: dict, seed: int, hard_rows: list[dict], start_acc: float,
            target: float) -> dict:
    cfg = from_dict(TrainConfig, {**params, "seed": seed}, "train")
    model = copy.deepcopy(base)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train_model(model, tokenizer, suite, cfg, out_dir=Path(tmp) / "model",
                              checkpoint_dir=Path(tmp) / "ckpt", metrics_dir=Path(tmp) / "metrics")
    curve = metrics["eval_curve"]
    reached = next((step for step, acc in curve if acc >= start_acc + target), None)
    hard_correct = score_rows(model, tokenizer, hard_rows).correct
    return {
        "mean_val_acc": sum(acc for _, acc in curve) / len(curve),
        "examples_to_target": (reached or cfg.max_steps) * cfg.batch_size,
        "reached_target": reached is not None,
        "val_acc": metrics["val_acc"],
        "hard_acc": float(hard_correct.float().mean()),
        "dream_steps": int(metrics["controllers"].get("dreams", {}).get("dream/cycles", 0)) * cfg.dreams.steps,
        **weight_stats(model),
    }


ALL_ON = {
    "grokfast": {"enabled": True, "schedule": {"enabled": True}},
    "edge": {"enabled": True},
    "geometry": {"enabled": True, "every": 100},
    "self_model": {"enabled": True},
    "dreams": {"enabled": True, "every": 100},
    "temperature": {"enabled": True},
}


def measure_overhead(base, suite, tokenizer, common: dict, seed: int = 0, repeats: int = 3) -> dict:
    """Mean step time (forward, backward, step and every hook; evaluations excluded) of the
    plain loop and of the loop with every controller on, geometry probes and dream phases
    amortised over their cadence (every 100 steps); the median over ``repeats`` runs per arm.

    Step time depends on sequence length, so both arms must see the same batches: both draw
    generated examples through an edge curriculum frozen at level 1 (band [0, 1] never moves).
    The curriculum's own cost, one bookkeeping append per example, is thus in both arms."""
    frozen = {"source": "generate", "edge": {"enabled": True, "band": [0.0, 1.0]}}
    times: dict[str, list[float]] = {"plain": [], "all_on": []}
    for _ in range(repeats):  # alternate the arms so load changes on a shared machine hit both
        for arm, params in (("plain", frozen), ("all_on", {**ALL_ON, **frozen})):
            cfg = from_dict(TrainConfig, {**common, **params, "seed": seed, "eval_every": common["max_steps"]}, "train")
            with tempfile.TemporaryDirectory() as tmp:
                metrics = train_model(copy.deepcopy(base), tokenizer, suite, cfg, out_dir=Path(tmp) / "m",
                                      checkpoint_dir=Path(tmp) / "c", metrics_dir=Path(tmp) / "x")
            times[arm].append(metrics["step_time_ms"])
    plain, all_on = statistics.median(times["plain"]), statistics.median(times["all_on"])
    return {"plain": plain, "all_on": all_on, "ratio": all_on / plain, "runs": times}


def spread(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4g} +- {std:.2g}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ablations", default=",".join(ABLATIONS), help="comma list of " + ", ".join(ABLATIONS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=200, help="Forge-loop steps per run")
    parser.add_argument("--base-steps", type=int, default=600, help="SFT steps of the shared base")
    parser.add_argument("--model-path", help="start from this HF model directory instead")
    parser.add_argument("--target", type=float, default=0.1, help="val accuracy gain for examples_to_target")
    parser.add_argument("--overhead", action="store_true",
                        help="also time the plain loop against all controllers on (--steps steps, seed 0)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [a.strip() for a in args.ablations.split(",") if a.strip()]
    for name in names:
        if name not in ABLATIONS:
            parser.error(f"unknown ablation {name!r}; valid: {', '.join(ABLATIONS)}")
    torch.set_num_threads(1)
    started = time.perf_counter()

    suite = build_suite(n_train=300, n_val=40)
    if args.model_path:
        from forgelib.models.hf import load_model

        base, tokenizer = load_model(args.model_path)
    else:
        tokenizer = build_char_tokenizer()
        base = pretrained_base(suite, tokenizer, args.base_steps)
    common = {"max_steps": args.steps, "batch_size": 32, "lr": 1e-3, "eval_every": 20, "eval_limit": 60,
              "checkpoint_every": 0, "log_every": 20}
    hard_rows = [r for splits in suite.values() for r in splits["validation"] if r["level"] == max(LEVELS)]
    start = evaluate_in_loop(base, tokenizer, eval_subsets(suite, common["eval_limit"]))["val_acc"]  # the runs' eval set
    hard_start = score_rows(base, tokenizer, hard_rows).correct
    results: dict = {"base": {"val_acc": start, "hard_acc": float(hard_start.float().mean())}}
    if not args.json:
        print(f"base model: val acc {start:.3f}, hard (level {max(LEVELS)}) acc {results['base']['hard_acc']:.3f}",
              file=sys.stderr)
    for name in names:
        arms = {arm: [run_arm(base, suite, tokenizer, {**common, **params}, seed, hard_rows, start, args.target)
                      for seed in seeds]
                for arm, params in (("off", BASE[name]), ("on", ABLATIONS[name]))}
        results[name] = {"seeds": seeds, **arms}
        if not args.json:
            print(f"\n{name} ({len(seeds)} seeds, {args.steps} steps)", file=sys.stderr)
            print(f"  {'metric':<20}{'off':>20}{'on':>20}{'on - off (paired)':>24}", file=sys.stderr)
            for metric in METRICS[name]:
                off, on = [r[metric] for r in arms["off"]], [r[metric] for r in arms["on"]]
                paired = [b - a for a, b in zip(off, on)]
                print(f"  {metric:<20}{spread(off):>20}{spread(on):>20}{spread(paired):>24}", file=sys.stderr)
            if name == "edge":
                hits = {arm: sum(r["reached_target"] for r in arms[arm]) for arm in arms}
                print(f"  seeds gaining {args.target} val acc: off {hits['off']}/{len(seeds)}, on {hits['on']}/"
                      f"{len(seeds)} (the others count at the cap)", file=sys.stderr)
    if args.overhead:
        results["overhead"] = measure_overhead(base, suite, tokenizer, common)
        if not args.json:
            o = results["overhead"]
            print(f"\noverhead: plain {o['plain']:.1f} ms/step, all controllers {o['all_on']:.1f} ms/step, "
                  f"ratio {o['ratio']:.2f}x", file=sys.stderr)
    results["seconds"] = time.perf_counter() - started
    if not args.json:
        print(f"\ntotal {results['seconds']:.0f} s", file=sys.stderr)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
