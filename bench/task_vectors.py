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

``--disjoint-mlp`` re-trains the named specialists (``--retrain-families``) so that their task
vectors cannot overlap: the MLP hidden units of every layer are dealt out (a seeded permutation)
into one share per specialist, and specialist ``i`` updates only its own units (their rows of
``gate_proj`` / ``up_proj`` and column of ``down_proj``); attention, embeddings, norms and the
head stay frozen. This is the sparse, task-localised fine-tuning family of merging methods
(Lottery Ticket Adaptation, Panda et al. 2024; TaLoS, Iurada et al. 2025), with the mask fixed in
advance instead of found by calibration, so no specialist can touch another's weights and
``A + sum_i tau_i`` keeps each one's edit exactly. Same rows, replay share, steps, batch and
schedule as ``base.specialist``; ``--retrain-lr`` (default 3e-3).

``--distill-replay`` changes what the re-trained specialists (``--disjoint-mlp`` or
``--full-retrain``, the latter a plain full fine-tune like ``base.specialist``) replay: the other
families' rows keep their prompts but take the ancestor's own greedy answers as targets, so the
replay holds the ancestor's behaviour where it is instead of teaching those families too. With
ground-truth replay every specialist also learns every other family a little, and a sum of
specialists applies that shared correction once per specialist.

``--silent-replay WEIGHT`` (with ``--full-retrain``) keeps each specialist functionally silent
outside its family instead of teaching or distilling the other families' answers: every step
takes half a batch of its own family's rows (cross-entropy, as ``base.specialist``) and half a
batch of the other families' rows, on which the loss is the relative squared distance between the
specialist's hidden states and the frozen ancestor's, after every layer (``WEIGHT`` times the
mean over layers of ``|h - h_A|^2 / |h_A|^2`` over non-pad positions). Answer distillation only
pins the output; a vector whose edits change no layer's activations on the other families' inputs
should, to first order, leave the other specialists' computations alone in a sum. This is
feature-level distillation used as a locality constraint (in the spirit of learning-without-
forgetting distillation, Li and Hoiem 2017, applied to every layer's hidden states).

``--continue-ancestor STEPS`` first trains the ancestor STEPS more steps on the whole mixture
(``base.specialist``'s lr and batch; saved as ``--retrain-out``/ancestor) and uses that model as
the base of the re-trained specialists and of every sum: it tests whether the shared direction
is the under-trained ancestor's own continued training, which every fine-tune repeats.

    python bench/task_vectors.py --json-out metrics/bench/task_vectors.json
    python bench/task_vectors.py --lora-rank 8 --lora-lr 3e-3 --json-out metrics/bench/task_vectors_lora8.json
    python bench/task_vectors.py --disjoint-mlp --json-out metrics/bench/task_vectors_disjoint.json
    python bench/task_vectors.py --full-retrain --distill-replay --json-out metrics/bench/task_vectors_distill.json
    python bench/task_vectors.py --full-retrain --retrain-lr 5e-4 --json-out metrics/bench/task_vectors_lr5e-4.json
    python bench/task_vectors.py --full-retrain --continue-ancestor 1000 --json-out metrics/bench/task_vectors_continued.json
    python bench/task_vectors.py --full-retrain --silent-replay 10 --json-out metrics/bench/task_vectors_silent10.json
    python bench/task_vectors.py --full-retrain --silent-replay 300 --json-out metrics/bench/task_vectors_silent300.json

Measured (validation; arithmetic + logic at w = 1 / all three at w = 1, against the arithmetic
specialist alone): disjoint 0.296 / 0.186 vs 0.442 (cosines exactly 0), distilled replay
0.244 / 0.057 vs 0.529, lr 5e-4 0.220 / 0.018 vs 0.504, continued ancestor 0.310 / 0.055 vs
0.604. No sum or scaled sum in any grid beats the best specialist alone. Silent replay (ancestor
0.359): at weight 10 the specialists learn less (arithmetic alone 0.393) and still erase other
families (the arithmetic one takes string from 0.952 to 0.530, the logic one to 0.443); arithmetic
+ string, 0.415, is the only sum measured anywhere that beats both of its specialists, but it
stays below the normally trained arithmetic specialist; arithmetic + logic 0.252, all three 0.250.
At weight 300 the arithmetic specialist learns nothing (arithmetic 0.070 against the ancestor's
0.075) while the logic one still takes string to 0.542: the relative distance of the hidden
states is not what carries the other families' answers.

Validation only; the test split is never read.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import replace
from pathlib import Path

import torch

from forgelib.base.build import _mixed_rows, _settings, _train_rows
from forgelib.base.sft import train_sft
from forgelib.config import load_section
from forgelib.data.batching import encode_rows, infinite_batches
from forgelib.data.tasks import families as task_families, load_tasks
from forgelib.eval.evaluate import fast_mean_exact_match
from forgelib.io import write_json
from forgelib.models.hf import load_model, save_model
from forgelib.runtime import configure_torch
from forgelib.specialize.svf import ADAPTED
from forgelib.train.schedule import learning_rate


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
        train_sft(peft_model, encode_rows(tokenizer, rows), replace(_settings(cfg.specialist, cfg.seed + 1), lr=lr),
                  pad_id=tokenizer.pad_token_id, desc=f"lora {name}")
        save_model(peft_model.merge_and_unload(), tokenizer, out / name,
                   {"name": f"bench-lora-{name}", "params": {"rank": rank, "lr": lr}})


def mlp_unit_shares(model, names: list[str], seed: int) -> dict[str, dict[int, torch.Tensor]]:
    """Per specialist, per layer: a boolean mask over the MLP's hidden units; the shares are disjoint."""
    g = torch.Generator().manual_seed(seed)
    shares: dict[str, dict[int, torch.Tensor]] = {n: {} for n in names}
    for i, layer in enumerate(model.model.layers):
        units = layer.mlp.gate_proj.out_features
        order = torch.randperm(units, generator=g)
        for j, name in enumerate(names):
            mask = torch.zeros(units, dtype=torch.bool)
            mask[order[j::len(names)]] = True
            shares[name][i] = mask
    return shares


def specialist_rows(cfg, tasks, name: str, ancestor_model, tokenizer, distill: bool) -> list[dict]:
    """``base.specialist``'s rows for ``name``; with ``distill`` the replay rows carry the ancestor's answers."""
    from forgelib.eval.generate import greedy_answers

    spec = cfg.specialists[name]
    rows = _mixed_rows(tasks, spec.family, spec.replay_fraction, cfg.seed)
    if not distill:
        return rows
    own = [r for r in rows if r["family"] == spec.family]
    replay = [r for r in rows if r["family"] != spec.family]
    longest = max(len(tokenizer(r["answer"])["input_ids"]) for r in rows)
    answers = greedy_answers(ancestor_model, tokenizer, [r["prompt"] for r in replay], max_new_tokens=longest + 1)
    return own + [{**r, "answer": a} for r, a in zip(replay, answers)]


def retrained_specialists(cfg, tasks, ancestor: Path, out: Path, families: list[str], lr: float,
                         distill: bool = False, disjoint: bool = True) -> None:
    """Train each named specialist on its own share of MLP units only (or all weights), under ``out``."""
    probe, probe_tok = load_model(ancestor)
    shares = mlp_unit_shares(probe, families, cfg.seed)
    for name in families:
        rows = specialist_rows(cfg, tasks, name, probe, probe_tok, distill)
        model, tokenizer = load_model(ancestor)
        settings = replace(_settings(cfg.specialist, cfg.seed + 1), lr=lr)
        if disjoint:
            _mask_to_share(model, shares[name])
            # AdamW's decoupled decay would shrink the other shares' entries of a trained tensor
            settings = replace(settings, weight_decay=0.0)
        train_sft(model, encode_rows(tokenizer, rows), settings,
                  pad_id=tokenizer.pad_token_id, desc=f"{'disjoint' if disjoint else 'full'} {name}")
        save_model(model, tokenizer, out / name, {"name": f"bench-retrained-{name}",
                                                  "params": {"lr": lr, "disjoint": disjoint, "distill_replay": distill}})


def relative_hidden_distance(moved, held, mask: torch.Tensor) -> torch.Tensor:
    """Mean over layers of ``|h - h_A|^2 / |h_A|^2`` on the positions ``mask`` (B, T, 1) keeps."""
    return sum(((h - a).pow(2) * mask).sum() / (a.pow(2) * mask).sum() for h, a in zip(moved, held)) / len(held)


def silent_specialist(cfg, tasks, ancestor: Path, out: Path, name: str, lr: float, weight: float) -> None:
    """Own family by cross-entropy; on the other families, every layer's hidden states held at the ancestor's."""
    from tqdm.auto import tqdm

    own_names = task_families(list(tasks))[cfg.specialists[name].family]
    model, tokenizer = load_model(ancestor)
    frozen = load_model(ancestor)[0].eval().requires_grad_(False)
    own = encode_rows(tokenizer, _train_rows(tasks, own_names))
    other = encode_rows(tokenizer, _train_rows(tasks, [t for t in tasks if t not in own_names]))
    settings = replace(_settings(cfg.specialist, cfg.seed + 1), lr=lr)
    torch.manual_seed(settings.seed)
    half = settings.batch_size // 2  # the same half-and-half batches as replay_fraction 0.5
    own_stream = infinite_batches(own, batch_size=half, pad_id=tokenizer.pad_token_id, seed=settings.seed)
    other_stream = infinite_batches(other, batch_size=half, pad_id=tokenizer.pad_token_id, seed=settings.seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=settings.weight_decay, betas=(0.9, 0.98))
    model.train()
    bar = tqdm(range(settings.steps), desc=f"silent {name}", leave=False, mininterval=1.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, peak=lr, warmup_steps=settings.warmup_steps, total_steps=settings.steps)
        ce = model(**next(own_stream)).loss
        batch = next(other_stream)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "output_hidden_states": True}
        mask = batch["attention_mask"].unsqueeze(-1).to(torch.float32)
        with torch.no_grad():
            held = frozen(**inputs).hidden_states[1:]
        moved = model(**inputs).hidden_states[1:]
        silence = relative_hidden_distance(moved, held, mask)
        loss = ce + weight * silence
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 25 == 0:
            bar.set_postfix(ce=f"{ce.item():.3f}", silence=f"{silence.item():.4f}")
    model.eval()
    save_model(model, tokenizer, out / name, {"name": f"bench-silent-{name}", "params": {"lr": lr, "silent_weight": weight}})


def continue_ancestor(cfg, tasks, ancestor: Path, out: Path, steps: int) -> Path:
    """The ancestor trained ``steps`` more steps on every task's train rows, saved under ``out``."""
    model, tokenizer = load_model(ancestor)
    rows = [row for name in tasks for row in tasks[name]["train"]]
    train_sft(model, encode_rows(tokenizer, rows), replace(_settings(cfg.specialist, cfg.seed + 2), steps=steps),
              pad_id=tokenizer.pad_token_id, desc="continued ancestor")
    save_model(model, tokenizer, out, {"name": "bench-continued-ancestor", "params": {"steps": steps}})
    return out


def _mask_to_share(model, share: dict[int, torch.Tensor]) -> None:
    """Freeze everything but this share's MLP units (their gate/up rows and down columns)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for i, layer in enumerate(model.model.layers):
        units = share[i].to(layer.mlp.gate_proj.weight.dtype)
        for lin, mask in ((layer.mlp.gate_proj, units[:, None]), (layer.mlp.up_proj, units[:, None]),
                          (layer.mlp.down_proj, units[None, :])):
            lin.weight.requires_grad_(True)
            lin.weight.register_hook(lambda grad, mask=mask: grad * mask)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--base", type=Path, default=Path("models/base"))
    parser.add_argument("--lora-rank", type=int, default=0, help="0: measure the committed full fine-tunes")
    parser.add_argument("--lora-lr", type=float, default=3e-3)
    parser.add_argument("--lora-families", default="arithmetic,logic,string")
    parser.add_argument("--lora-out", type=Path, default=Path("/tmp/forge-bench-lora"))
    parser.add_argument("--disjoint-mlp", action="store_true", help="re-train specialists on disjoint MLP units")
    parser.add_argument("--retrain-lr", type=float, default=None,
                        help="peak lr of the re-trained specialists (default: 3e-3 disjoint, base.specialist.lr full)")
    parser.add_argument("--retrain-families", default="arithmetic,logic,string")
    parser.add_argument("--full-retrain", action="store_true", help="re-train specialists as full fine-tunes")
    parser.add_argument("--distill-replay", action="store_true", help="replay rows take the ancestor's answers")
    parser.add_argument("--silent-replay", type=float, default=0.0, metavar="WEIGHT",
                        help="with --full-retrain: other families' rows hold every layer's hidden states at the ancestor's")
    parser.add_argument("--continue-ancestor", type=int, default=0, metavar="STEPS",
                        help="first train the ancestor STEPS more steps on the whole mixture and merge around it")
    parser.add_argument("--retrain-out", type=Path, default=Path("/tmp/forge-bench-retrained"))
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_torch()
    cfg = load_section("base", args.params)
    tasks = load_tasks(args.data)
    names = list(cfg.specialists)
    ancestor = args.base / "ancestor"
    if (args.distill_replay or args.retrain_lr) and not (args.disjoint_mlp or args.full_retrain):
        parser.error("--distill-replay and --retrain-lr apply to re-trained specialists: add --full-retrain or --disjoint-mlp")
    if args.silent_replay and not args.full_retrain:
        parser.error("--silent-replay applies to --full-retrain")
    if args.continue_ancestor:
        if not (args.disjoint_mlp or args.full_retrain):
            parser.error("--continue-ancestor needs --full-retrain or --disjoint-mlp (the specialists start from it)")
        ancestor = continue_ancestor(cfg, tasks, ancestor, args.retrain_out / "ancestor", args.continue_ancestor)
    dirs = {name: args.base / name for name in names}
    if args.lora_rank:
        lora = [f for f in args.lora_families.split(",") if f]
        lora_specialists(cfg, tasks, ancestor, args.lora_out, lora, args.lora_rank, args.lora_lr)
        dirs.update({name: args.lora_out / name for name in lora})
    if args.disjoint_mlp or args.full_retrain:
        chosen = [f for f in args.retrain_families.split(",") if f]
        lr = args.retrain_lr or (3e-3 if args.disjoint_mlp else cfg.specialist.lr)
        if args.silent_replay:
            for name in chosen:
                silent_specialist(cfg, tasks, ancestor, args.retrain_out, name, lr, args.silent_replay)
        else:
            retrained_specialists(cfg, tasks, ancestor, args.retrain_out, chosen, lr,
                                 distill=args.distill_replay, disjoint=args.disjoint_mlp)
        dirs.update({name: args.retrain_out / name for name in chosen})
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
              "lora_lr": args.lora_lr if args.lora_rank else None,
              "disjoint_mlp": args.disjoint_mlp, "retrain_lr": args.retrain_lr,
              "full_retrain": args.full_retrain, "distill_replay": args.distill_replay,
              "silent_replay_weight": args.silent_replay or None,
              "continue_ancestor_steps": args.continue_ancestor or None, "norms": norms, "cosines": cosines,
              "split": "validation", "grid": rows}
    if args.json_out:
        write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
