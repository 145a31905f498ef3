"""Score models on the headline suite with plain transformers and nothing of Forge's.

Reviewers re-evaluate the committed models with their own code, so every reported ``test_mean``
must come out of ``AutoModelForCausalLM.from_pretrained`` and greedy ``generate`` alone. This
script is that check, written without importing ``forgelib``: it reads the prepared splits with
``datasets.load_from_disk`` (``DATA/tasks/<task>``), left-pads each batch of prompts, decodes
greedily until ``<eos>`` or the task's longest answer + 2 tokens, and counts an answer right when
it equals the reference with surrounding whitespace stripped. A task's family is its rows'
``family`` column; a model's score is the mean over families of the mean over their tasks.

A compressed container is not a Hugging Face directory: decode it first with
``forge compression decompress models/compressed/final/model.forge.safetensors OUT`` and pass
``OUT`` (what a user of the shipped model loads).

    python bench/plain_transformers_eval.py --models trained=models/trained,shipped=/tmp/shipped
        [--data data] [--split test] [--json-out metrics/bench/plain_transformers.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def score_model(model_dir: str, data_dir: str, split: str = "test", batch_size: int = 256) -> dict:
    """Per-task exact match, per-family means and their mean for one model directory."""
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tasks, family_of = {}, {}
    for path in sorted((Path(data_dir) / "tasks").iterdir()):
        rows = load_from_disk(str(path))[split]
        hits = 0
        budget = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in rows["answer"]) + 2
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            encoded = tokenizer(batch["prompt"], return_tensors="pt", padding=True)
            with torch.no_grad():
                out = model.generate(**encoded, max_new_tokens=budget, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
            hits += sum(t.strip() == a.strip() for t, a in zip(texts, batch["answer"]))
        tasks[path.name] = hits / len(rows)
        family_of[path.name] = rows[0]["family"]
    families: dict[str, list[float]] = {}
    for task, score in tasks.items():
        families.setdefault(family_of[task], []).append(score)
    family_means = {f: sum(v) / len(v) for f, v in families.items()}
    return {"tasks": tasks, "families": family_means, "mean": sum(family_means.values()) / len(family_means)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", required=True, help="label=path pairs (Hugging Face directories), comma-separated")
    parser.add_argument("--data", default="data")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (Path(args.data) / "tasks").is_dir():
        print(f"error: --data: {args.data}/tasks not found; run `dvc repro prepare`", file=sys.stderr)
        return 2
    results = {}
    for pair in [p for p in args.models.split(",") if p]:
        label, _, path = pair.partition("=")
        if not (Path(path) / "config.json").is_file():
            print(f"error: --models: {label}={path} is not a Hugging Face model directory (no config.json); "
                  "decode a container with `forge compression decompress FILE OUT` first", file=sys.stderr)
            return 2
        results[label] = {"path": path, **score_model(path, args.data, args.split)}
        print(f"{label}: {args.split} mean {results[label]['mean']:.5f} "
              + " ".join(f"{f} {v:.3f}" for f, v in results[label]["families"].items()))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json_out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"split": args.split, "models": results}, indent=2, sort_keys=True) + "\n")
        tmp.replace(args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
