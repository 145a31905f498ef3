"""Do the specialists' task vectors add? Interference measured on the committed base models.

For the ancestor ``A`` and each specialist ``S_i`` (``models/base/``), the task vector is
``tau_i = S_i - A`` over every tensor. The script prints each vector's norm, the cosine between
each pair, and the validation exact match (per family and the family mean, 200 rows per task,
teacher-forced argmax = greedy exact match) of ``A + sum_i w_i tau_i`` for a grid of weights:
each specialist alone (w = 1), pairs and all three at w = 1 (plain task arithmetic, Ilharco et
al. 2023), and scaled sums (w = 0.7, 0.5, 0.4). Merging is known to combine skills when these
sums keep each specialist's own family; where a sum at w = 1 scores below the ancestor, the
specialists interfere and no re-weighting of whole vectors recovers both skills, which is what
``evomerge``'s search meets on the embedded default (README, "What the embedded default
measures").

``--lora-rank R`` first re-trains the named specialists (``--lora-families``) as rank-R ``peft``
LoRA fine-tunes of every linear layer (alpha 2R; same rows, replay share, steps, batch and
schedule as ``base.specialist``; ``--lora-lr``), merges each adapter into a full model under
``--lora-out``, and measures the same grid with them in place of the full fine-tunes: a low-rank
update is the other common way to keep task vectors small and compatible.

    python bench/task_vectors.py --json-out metrics/bench/task_vectors.json
    python bench/task_vectors.py --lora-rank 8 --lora-lr 3e-3 --json-out metrics/bench/task_vectors_lora8.json

Validation only; the test split is never read.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

from forgelib.base.build import _mixed_rows
from forgelib.base.sft import SFTSettings, train_sft
from forgelib.config import load_section
from forgelib.data.batching import encode_rows
from forgelib.data.tasks import load_tasks
from forgelib.eval.evaluate import fast_mean_exact_match
from forgelib.io import write_json
from forgelib.models.hf import load_model, save_model
from forgelib.runtime import configure_torch
from forgelib.specialize.svf import ADAPTED


def weight_grid(names: list[str]) -> list[tuple[float, ...]]:
    """Each specialist alone, every pair and all at 1, then all at 0.7 / 0.5 / 0.4 (and pairs at those)."""
    n = len(names)
    grid = [tuple(0.0 for _ in names)]
    grid += [tuple(1.0 if j == i else 0.0 for j in range(n)) for i in range(n)]
    for scale in (1.0, 0.7, 0.5, 0.4):
        for size in range(2, n + 1):
            for subset in itertools.combinations(range(n), size):
                grid.append(tuple(scale if j in subset else 0.0 for j in range(n)))
    return grid


def lora_specialists(cfg, tasks, ancestor: Path, out: Path, families: list[str], rank: int, lr: float) -> None:
    """Train each named specialist as a merged rank-``rank`` LoRA of the ancestor under ``out``."""
    from peft import LoraConfig, get_peft_model

    for name in families:
        spec = cfg.specialists[name]
        model, tokenizer = load_model(ancestor)
        torch.manual_seed(cfg.seed + 1)  # peft draws A at random
        peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none",
                                                      target_modules=list(ADAPTED)))
        rows = _mixed_rows(tasks, spec.family, spec.replay_fraction, cfg.seed)
        s = cfg.specialist
        train_sft(peft_model, encode_rows(tokenizer, rows),
                  SFTSettings(steps=s.steps, lr=lr, batch_size=s.batch_size, weight_decay=s.weight_decay,
                              warmup_steps=s.warmup_steps, seed=cfg.seed + 1),
                  pad_id=tokenizer.pad_token_id, desc=f"lora {name}")
        save_model(peft_model.merge_and_unload(), tokenizer, out / name,
                   {"name": f"bench-lora-{name}", "params": {"rank": rank, "lr": lr}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--base", type=Path, default=Path("models/base"))
    parser.add_argument("--lora-rank", type=int, default=0, help="0: measure the committed full fine-tunes")
    parser.add_argument("--lora-lr", type=float, default=3e-3)
    parser.add_argument("--lora-families", default="arithmetic,logic,string")
    parser.add_argument("--lora-out", type=Path, default=Path("/tmp/forge-bench-lora"))
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_torch()
    cfg = load_section("base", args.params)
    tasks = load_tasks(args.data)
    names = list(cfg.specialists)
    ancestor = args.base / "ancestor"
    dirs = {name: args.base / name for name in names}
    if args.lora_rank:
        lora = [f for f in args.lora_families.split(",") if f]
        lora_specialists(cfg, tasks, ancestor, args.lora_out, lora, args.lora_rank, args.lora_lr)
        dirs.update({name: args.lora_out / name for name in lora})
    model, tokenizer = load_model(ancestor)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    taus = {}
    for name, path in dirs.items():
        sd = load_model(path)[0].state_dict()
        taus[name] = {k: sd[k] - base[k] for k in base}

    def flat(name):
        return torch.cat([t.flatten() for t in taus[name].values()])

    norms = {n: float(flat(n).norm()) for n in names}
    cosines = {f"{a}~{b}": float(torch.nn.functional.cosine_similarity(flat(a), flat(b), dim=0))
               for a, b in itertools.combinations(names, 2)}
    print("task vector norms:", {n: round(v, 2) for n, v in norms.items()})
    print("cosines:", {k: round(v, 3) for k, v in cosines.items()})
    rows = []
    header = " ".join(f"{n[:6]:>6}" for n in names)
    print(f"{header} | {'mean':>6} | per family (validation)")
    for weights in weight_grid(names):
        model.load_state_dict({k: base[k] + sum(w * taus[n][k] for n, w in zip(names, weights)) for k in base})
        r = fast_mean_exact_match(model, tokenizer, tasks, split="validation")
        rows.append({"weights": dict(zip(names, weights)), "mean": r["mean"], "families": r["families"]})
        fams = " ".join(f"{f} {v:.3f}" for f, v in sorted(r["families"].items()))
        print(" ".join(f"{w:6.2f}" for w in weights) + f" | {r['mean']:6.3f} | {fams}", flush=True)
    result = {"specialists": {n: str(p) for n, p in dirs.items()}, "lora_rank": args.lora_rank or None,
              "lora_lr": args.lora_lr if args.lora_rank else None, "norms": norms, "cosines": cosines,
              "split": "validation", "grid": rows}
    if args.json_out:
        write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
