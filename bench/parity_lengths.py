"""Why parity caps the logic family: its short strings exist only in the held-out splits.

`prepare` takes the held-out splits first from one stream of distinct prompts, then train fills up
from the rest (forgelib/data/prepare.py). Parity at level 4 draws lengths 2..10 uniformly, and a
length has only 2**L distinct strings, so the first 500 distinct prompts (validation, then test)
use up every string of length <= 5 and most of lengths 6 and 7: train keeps none shorter than 6
and only 52 of lengths 6-7, against 89 of the 300 test rows at lengths 4-7. The frozen suite
therefore asks parity for downward length generalisation, which this Llama (RoPE, 2-3 layers)
does not do: each output bit needs the input bit one answer-length back, and that distance was
only ever seen for lengths >= 6.

This script measures it, on every model given (Hugging Face directories or Forge containers):

- the parity split coverage per length: distinct strings, and how many train/validation/test hold;
- each model's parity exact match per answer length on validation and test (greedy decoding, the
  suite's own scoring), and the share of its parity errors at lengths absent from train or rare
  there (< ``--rare`` rows);
- the headline ceiling those two tasks leave: the family mean a model would reach if every other
  task of the suite scored 1.0, with its own parity and mod_mul scores (test split);
- optionally (``--arms``), fine-tune arms from ``--finetune-from`` that try to teach short lengths
  without any held-out prompt: ``control`` (the suite's train rows, uniform over tasks, as the
  train stage samples them), ``bit_copy`` (plus an auxiliary task `cpb:<bits>=` -> the same bits,
  lengths 2..10, never in the suite: copy needs the same one-answer-length lookback on the same
  alphabet) and ``random_positions`` (parity rows get sorted random position ids from
  ``range(--position-range)``, Ruoss et al. 2023's randomized positional encodings, so a lookback
  cannot be a fixed distance). Each arm reports parity per length and the family mean on
  validation.

    python bench/parity_lengths.py [--models ancestor=models/base/ancestor,...] [--arms control,bit_copy,random_positions]
        [--steps 600] [--json-out metrics/bench/parity_lengths.json]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

DEFAULT_MODELS = ("ancestor=models/base/ancestor,logic_specialist=models/base/logic,evolved=models/evolved,"
                  "trained=models/trained,shipped=models/compressed/final")
ARMS = ("control", "bit_copy", "random_positions")


def length_coverage(splits: Mapping[str, Sequence[str]], alphabet_size: int = 2) -> dict[int, dict[str, int]]:
    """Answer length -> rows per split and the number of distinct strings of that length."""
    counts = {name: Counter(len(a) for a in answers) for name, answers in splits.items()}
    lengths = sorted({n for c in counts.values() for n in c})
    return {n: {"distinct": alphabet_size ** n, **{name: c.get(n, 0) for name, c in counts.items()}} for n in lengths}


def accuracy_by_length(predictions: Sequence[str], references: Sequence[str]) -> dict[int, dict[str, float]]:
    """Answer length -> rows, hits and exact match (the suite's scoring: forgelib.eval.scoring.exact_match)."""
    from forgelib.eval.scoring import exact_match

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    table: dict[int, list[int]] = {}
    for r, hit in zip(references, exact_match(predictions, references)):
        row = table.setdefault(len(r.strip()), [0, 0])
        row[0] += hit
        row[1] += 1
    return {n: {"n": total, "hits": hits, "exact_match": hits / total} for n, (hits, total) in sorted(table.items())}


def short_error_share(by_length: Mapping[int, Mapping[str, float]], train_rows: Mapping[int, int], rare: int) -> dict:
    """How many errors fall at lengths with fewer than ``rare`` train rows (none, for most)."""
    errors = {n: r["n"] - r["hits"] for n, r in by_length.items()}
    short = sum(e for n, e in errors.items() if train_rows.get(n, 0) < rare)
    total = sum(errors.values())
    return {"errors": total, "errors_at_rare_lengths": short, "share": short / total if total else 0.0}


def headline_ceiling(task_scores: Mapping[str, float], family_of: Mapping[str, str], keep: Sequence[str]) -> float:
    """The family mean if every task outside ``keep`` scored 1.0 and those in ``keep`` kept their score."""
    from forgelib.eval.scoring import family_mean, family_scores

    return family_mean(family_scores({t: s if t in keep else 1.0 for t, s in task_scores.items()}, family_of))


def _parity_table(model, tokenizer, parity, split: str) -> dict:
    from forgelib.eval.generate import greedy_answers

    rows = parity[split]
    budget = max(len(a) for a in rows["answer"]) + 2
    preds = greedy_answers(model, tokenizer, list(rows["prompt"]), max_new_tokens=budget)
    by_length = accuracy_by_length(preds, list(rows["answer"]))
    hits = sum(r["hits"] for r in by_length.values())
    return {"exact_match": hits / len(rows), "by_length": by_length}


def _finetune(arm: str, source: Path, tasks: Mapping, *, steps: int, lr: float, batch_size: int, seed: int,
              position_range: int) -> tuple:
    """One fine-tune arm from ``source``; returns the model and tokenizer (see the module docstring)."""
    import torch

    from forgelib.data.batching import collate, encode
    from forgelib.models.hf import load_model

    model, tokenizer = load_model(source)
    torch.manual_seed(seed)
    rng = random.Random(f"parity_lengths:{arm}:{seed}")
    train = {name: list(zip(s["train"]["prompt"], s["train"]["answer"])) for name, s in sorted(tasks.items())}
    names = list(train)
    draws = len(names) + (1 if arm == "bit_copy" else 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    model.train()
    for step in range(steps):
        rows = []
        for _ in range(batch_size):
            k = rng.randrange(draws)
            if k == len(names):  # the auxiliary bit copy: lengths 2..10 like parity's, prefix never in the suite
                bits = "".join(rng.choice("01") for _ in range(rng.randint(2, 10)))
                rows.append((f"cpb:{bits}=", bits))
            else:
                rows.append(rng.choice(train[names[k]]))
        encoded = [encode(tokenizer, p, a) for p, a in rows]
        batch = collate(encoded, tokenizer.pad_token_id)
        if arm == "random_positions":
            width = batch["input_ids"].shape[1]
            positions = torch.arange(width).repeat(len(rows), 1)
            for i, ((prompt, _), (ids, _)) in enumerate(zip(rows, encoded)):
                if prompt.startswith("par:"):
                    n = len(ids)
                    positions[i, :n] = torch.tensor(sorted(rng.sample(range(position_range), n)))
                    positions[i, n:] = positions[i, n - 1] + 1 + torch.arange(width - n)
            batch["position_ids"] = positions
        warm = min(1.0, (step + 1) / 20)
        for group in optimizer.param_groups:
            group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    return model, tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="label=path pairs, comma-separated")
    parser.add_argument("--rare", type=int, default=50, help="a length with fewer train rows than this is rare")
    parser.add_argument("--arms", default="", help=f"comma-separated fine-tune arms: {', '.join(ARMS)}")
    parser.add_argument("--finetune-from", type=Path, default=Path("models/trained"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--position-range", type=int, default=48)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)

    from forgelib.compress.loader import load_model_any
    from forgelib.data.tasks import load_tasks
    from forgelib.eval.evaluate import evaluate_model
    from forgelib.io import write_json
    from forgelib.runtime import configure_torch

    configure_torch()
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        print(f"error: --arms: unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}", file=sys.stderr)
        return 2
    tasks = load_tasks(args.data)
    if "parity" not in tasks:
        print(f"error: {args.data}/tasks has no parity task; run `dvc repro prepare`", file=sys.stderr)
        return 2
    parity = tasks["parity"]
    coverage = length_coverage({s: list(parity[s]["answer"]) for s in ("train", "validation", "test")})
    train_rows = {n: c["train"] for n, c in coverage.items()}
    family_of = {name: s["test"][0]["family"] for name, s in tasks.items()}
    result: dict = {"coverage": coverage, "rare_below_train_rows": args.rare, "models": {}, "arms": {}}
    print("parity rows per answer length (distinct strings / train / validation / test):")
    for n, c in coverage.items():
        print(f"  {n:2d}: {c['distinct']:5d} {c['train']:5d} {c['validation']:5d} {c['test']:5d}")

    for pair in [p for p in args.models.split(",") if p]:
        label, _, path = pair.partition("=")
        if not Path(path).exists():
            print(f"error: --models: {label}={path} does not exist", file=sys.stderr)
            return 2
        model, tokenizer = load_model_any(path)
        entry = {"path": path}
        for split in ("validation", "test"):
            table = _parity_table(model, tokenizer, parity, split)
            table["errors"] = short_error_share(table["by_length"], train_rows, args.rare)
            entry[split] = table
        suite = evaluate_model(model, tokenizer, tasks, split="test")
        scores = {name: r["exact_match"] for name, r in suite["tasks"].items()}
        entry["test_mean"] = suite["mean"]
        entry["ceiling_if_others_perfect"] = headline_ceiling(scores, family_of, keep=("parity", "mod_mul"))
        entry["ceiling_if_others_and_mod_mul_perfect"] = headline_ceiling(scores, family_of, keep=("parity",))
        result["models"][label] = entry
        t = entry["test"]
        print(f"{label}: parity test {t['exact_match']:.3f} "
              + " ".join(f"{n}:{r['hits']}/{r['n']}" for n, r in t["by_length"].items())
              + f"; errors at rare lengths {t['errors']['errors_at_rare_lengths']}/{t['errors']['errors']}"
              + f"; test mean {entry['test_mean']:.3f}, ceiling with others perfect {entry['ceiling_if_others_perfect']:.3f}")

    for arm in arms:
        model, tokenizer = _finetune(arm, args.finetune_from, tasks, steps=args.steps, lr=args.lr,
                                     batch_size=args.batch_size, seed=args.seed, position_range=args.position_range)
        val = evaluate_model(model, tokenizer, tasks, split="validation")
        table = _parity_table(model, tokenizer, parity, "validation")
        result["arms"][arm] = {"from": str(args.finetune_from), "steps": args.steps, "lr": args.lr,
                               "validation_mean": val["mean"], "validation_families": val["families"],
                               "parity_validation": table}
        print(f"arm {arm}: validation mean {val['mean']:.3f}, parity {table['exact_match']:.3f} "
              + " ".join(f"{n}:{r['hits']}/{r['n']}" for n, r in table["by_length"].items()))
    if args.json_out:
        write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
