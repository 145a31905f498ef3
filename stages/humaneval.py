"""Stage `humaneval@NAME`: HumanEval pass@1 of one phase's model (params `humaneval.models.NAME`).

Generates greedy completions for the first `humaneval.limit` problems, runs each in the sandbox,
and writes `metrics/humaneval/NAME.json` ({"pass@1", "n_problems", "n_passed", ...}) plus the
completions with their outcomes in `metrics/humaneval/NAME.samples.jsonl`. One stage per phase,
so `dvc metrics diff` shows what each phase did to a real model's coding, and changing one
phase re-scores only the models downstream of it.
"""

import argparse
import time
from pathlib import Path

from forgelib.compress.loader import load_model_any
from forgelib.config import load_section
from forgelib.errors import ForgeError
from forgelib.eval.humaneval import run_humaneval
from forgelib.io import write_json, write_text_atomic
from forgelib.runtime import stage


@stage
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", help="A key of params humaneval.models.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="metrics/humaneval", help="Directory of the metrics and samples files.")
    args = parser.parse_args()
    cfg = load_section("humaneval", args.params)
    if args.name not in cfg.models:
        raise ForgeError(f"{args.params}: humaneval.models has no entry {args.name!r}; "
                         f"valid: {', '.join(cfg.models) or 'none'}")
    out, model_path, start = Path(args.out), Path(cfg.models[args.name]), time.perf_counter()
    model, tokenizer = load_model_any(model_path)
    loaded = time.perf_counter() - start
    run = run_humaneval(model, tokenizer, limit=cfg.limit, max_new_tokens=cfg.max_new_tokens)
    write_text_atomic(out / f"{args.name}.samples.jsonl", run.samples_jsonl())
    write_json(out / f"{args.name}.json", {**run.metrics(load_seconds=loaded), "model": str(model_path),
                                           "max_new_tokens": cfg.max_new_tokens})
    return str(out / f"{args.name}.json")


if __name__ == "__main__":
    main()
