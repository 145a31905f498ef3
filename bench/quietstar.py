"""Quiet-STaR on the serial-computation task, against its control arms (issue 12).

Runs what the ``quietstar`` stage measures (:func:`forgelib.quietstar.run.measure_arms`, params
``quietstar:``, its ``enabled`` switch ignored) on the stage's inputs (``data/`` and
``models/evolved``): ``sft``, ``pause``, ``thoughts`` and ``random_thoughts``, each over
``quietstar.seeds`` seeds, tested on the serial task's held-out split. The thoughts arm is also
scored on the headline suite with plain weights (``test_mean``) and thinking
(``test_mean_thinking``). ``enabled_by_default`` applies the issue's bar.

    python bench/quietstar.py --json --out metrics/quietstar.json   # ~5 CPU-minutes, 1 thread
    python bench/quietstar.py --steps 50                            # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from forgelib.configtools import replace
from forgelib.io import write_json
from forgelib.config import load_section
from forgelib.quietstar.run import ARMS, measure_arms
from forgelib.runtime import configure_torch


def table(result: dict) -> str:
    lines = ["arm              test_mean per seed          mean    std",
             "---------------  ------------------------  ------  ------"]
    for name in ARMS:
        arm = result["arms"][name]
        seeds = " ".join(f"{v:.3f}" for v in arm["test_mean"])
        lines.append(f"{name:<15}  {seeds:<24}  {arm['mean']:.4f}  {arm['std']:.4f}")
    head = result["arms"]["thoughts"]["headline"]
    per_seed = lambda values: " ".join(f"{v:.3f}" for v in values)  # noqa: E731
    lines.append(f"task {result['task']} level {result['level']} (input model {result['input_test_mean']:.4f})")
    lines.append(f"thoughts arm on the headline suite (input {head['input_test_mean']:.3f}): plain weights "
                 f"{per_seed(head['test_mean'])}, thinking {per_seed(head['test_mean_thinking'])}")
    lines.append(f"enabled_by_default: {result['enabled_by_default']} {result['decision']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--input", default="models/evolved", help="the quietstar stage's input model")
    parser.add_argument("--steps", type=int, help="override quietstar.steps")
    parser.add_argument("--model-out", help="also save the seed-0 thinking model here")
    parser.add_argument("--out", help="also write the JSON result here (e.g. metrics/quietstar.json)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)
    configure_torch()
    cfg = load_section("quietstar", args.params)
    if args.steps is not None:
        cfg = replace(cfg, "quietstar", steps=args.steps)
    started = time.process_time()
    result, _ = measure_arms(cfg, data_dir=args.data, input_dir=args.input, model_out=args.model_out)
    result["cpu_seconds"] = time.process_time() - started
    print(f"[quietstar bench] total {result['cpu_seconds']:.0f} CPU s", file=sys.stderr)
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result) if args.json else table(result))
    return result


if __name__ == "__main__":
    main()
