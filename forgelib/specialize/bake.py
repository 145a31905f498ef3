"""Prompt baking (Bhargava et al. 2024, "Prompt Baking", arXiv 2409.13697): move a prompt into the weights.

For a prefix ``u`` the baked weights minimise, over inputs ``x`` and answers ``y`` sampled from the
prompted model,

    sum_t KL( P_theta(. | u, x, y_<t) || P_baked(. | x, y_<t) )

The teacher is the model with the prefix (adapter off); the student is a ``peft`` LoRA of the
same model that never sees the prefix. After training the LoRA is merged, so the result is a
plain transformers model that answers as if ``u`` were always in front of the prompt.

:func:`bake` runs the whole recipe:

1. **Candidates.** k-shot prefixes (k solved train examples of the target in its own format, each
   followed by the separator) and instruction strings. A candidate is kept only where
   ``<bos> prefix prompt answer <eos>`` fits the model's positions for every row of the target.
2. **Choice on validation.** Each candidate's gain is prompted minus unprompted exact match
   (teacher-forced, which equals greedy decoding up to ties). The best is baked. It *helps* only
   when the gain reaches ``min_gain``; otherwise there is nothing worth baking (issue 13), and
   the output weights stay the input's unless ``bake_unhelpful`` is set.
3. **Trajectories.** ``trajectories`` answers per train input, sampled from the teacher at
   ``temperature`` (the reference code samples at 2, which visits positions greedy decoding
   never reaches), stopped at ``<eos>``.
4. **Baking.** AdamW on the LoRA, loss = mean per-token forward KL over the full vocabulary. The
   teacher's distribution is its own (temperature 1); the temperature only shapes which ``y`` are
   visited.
5. **Report on test.** Greedy exact match of the base without and with the prefix and of the baked
   model without it; held-out KL(prompted || base) and KL(prompted || baked) per answer token on
   one trajectory per test prompt sampled from the prompted model at temperature 1 (so the mean
   estimates the sequence-level KL per token); drift KL(base || baked) per token on the other
   families' test prompts without prefix, on answers sampled from the base at temperature 1.

Trajectories are sampled once, before training, as a fixed pool (the reference code, too, generates
a trajectory dataset first and trains epochs on it); by default 512 train prompts x 2 answers,
about the reference's thousand. Where this differs from the reference, and why: the LoRA defaults
(rank 8, alpha 16, lr 3e-3, 200 steps) replace its rank 32, alpha 1, lr 1e-4, because the embedded
default's matrices are 64 wide and baking must finish in under a minute of one CPU thread.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from forgelib.data.batching import IGNORE, collate
from forgelib.errors import ForgeError
from forgelib.eval.evaluate import forced_exact_match
from forgelib.eval.generate import greedy_answers
from forgelib.eval.scoring import accuracy, exact_match
from forgelib.io import write_text_atomic
from forgelib.specialize.bake_config import BakeConfig
from forgelib.train.schedule import learning_rate

KEY = "specialize.bake"
Pair = tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]
"""(teacher row, student row): ``(ids, labels)`` of ``<bos> prefix x y`` and ``<bos> x y``."""


@dataclass(frozen=True)
class Candidate:
    target: str
    prefix: str
    kind: str  # "k-shot" or "instruction"


@dataclass
class BakeResult:
    model: object
    """A new plain transformers model: the input's weights with the baked LoRA merged, or a copy of the
    input's weights when the prefix did not help and ``bake_unhelpful`` is off (``metrics["merged"]``)."""
    metrics: dict
    """Test figures ``prompted_base``, ``unprompted_base``, ``baked`` (greedy exact match, mean over the
    target's tasks), ``kl_base``, ``kl_baked``, ``drift_kl`` (nats per answer token; ``drift_kl`` is None
    when the data has no other family), and extras: the chosen ``prefix`` and ``target``,
    ``prefix_helps`` (validation gain >= min_gain), ``merged`` (whether ``model`` carries the bake),
    ``gain`` (test, prompted minus unprompted), ``off_target_base`` / ``off_target_baked`` (greedy
    exact match on the drift prompts, mean over the other tasks), ``recovered_fraction``
    ((baked - unprompted) / gain: the share of the prompt's effect the baked model shows without
    it; None when the gain is 0), ``per_task``, ``validation``
    (the choice, with every candidate's figures), ``kl_history``, ``seconds`` and ``seconds_by_phase``."""
    curve: list[dict] = field(default_factory=list)
    """Half-baking curve: ``{"step", "accuracy"}`` (unprompted validation exact match)."""


def token_kl(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """(N,) forward KL(softmax(teacher) || softmax(student)) per row of (N, V) logits, in nats."""
    log_p = F.log_softmax(teacher_logits.float(), dim=-1)
    log_q = F.log_softmax(student_logits.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def answer_logits(model, rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> Tensor:
    """(N, V) logits at the positions predicting each labelled token, rows in order."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in collate(rows, pad_id).items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits[:, :-1][batch["labels"][:, 1:] != IGNORE]


@torch.no_grad()
def mean_kl(teacher, student, pairs: Sequence[Pair], pad_id: int, *, batch_size: int) -> float:
    """Mean per-token KL(teacher || student) over the ``y`` tokens of ``pairs``."""
    total, count = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        kl = token_kl(answer_logits(teacher, [t for t, _ in chunk], pad_id),
                      answer_logits(student, [s for _, s in chunk], pad_id))
        total, count = total + kl.sum().item(), count + kl.numel()
    return total / max(count, 1)


def pair(tokenizer, prefix: str, prompt: str, answer_ids: list[int]) -> Pair:
    """Teacher and student rows for one trajectory; labels cover ``y`` only."""
    teacher_ids = tokenizer(prefix + prompt)["input_ids"]
    student_ids = tokenizer(prompt)["input_ids"]
    return ((teacher_ids + answer_ids, [IGNORE] * len(teacher_ids) + answer_ids),
            (student_ids + answer_ids, [IGNORE] * len(student_ids) + answer_ids))


@torch.no_grad()
def sample_answers(model, tokenizer, prompts: Sequence[str], *, n: int, temperature: float, max_new_tokens: int,
                   seed: int, batch_size: int) -> list[list[int]]:
    """``n`` sampled answers per prompt (prompt-major), each cut after its first ``<eos>``."""
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    out: list[list[int]] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True).to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                 top_k=0, top_p=1.0, num_return_sequences=n, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
            for row in gen[:, enc["input_ids"].shape[1] :].tolist():
                out.append(row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row)
    return out


def target_tasks(tasks: Mapping, target: str) -> dict[str, list[str]]:
    """Target name -> its task names: one target, or every family for ``auto``."""
    family_of = {name: splits["test"][0]["family"] for name, splits in tasks.items()}
    families: dict[str, list[str]] = {}
    for name, family in family_of.items():
        families.setdefault(family, []).append(name)
    if target == "auto":
        return families
    if target in tasks:
        return {target: [target]}
    if target in families:
        return {target: families[target]}
    raise ForgeError(f"{KEY}.target: {target!r} is neither a task nor a family of the data; valid: auto, "
                     f"{', '.join(sorted(families))}, {', '.join(sorted(tasks))}")


def _longest_row(tokenizer, tasks: Mapping, names: Sequence[str]) -> int:
    """Tokens of the longest ``prompt answer`` among the target's rows (all splits)."""
    return max(len(tokenizer(r["prompt"] + r["answer"], add_special_tokens=False)["input_ids"])
               for n in names for split in tasks[n].values() for r in split)


def candidates(tokenizer, tasks: Mapping, targets: Mapping[str, list[str]], cfg: BakeConfig, *, seed: int,
               max_positions: int | None) -> list[Candidate]:
    """Every k-shot and instruction prefix of every target that fits ``max_positions``."""
    out = []
    for target, names in targets.items():
        train = [r for n in names for r in tasks[n]["train"]]
        budget = None if max_positions is None else max_positions - 2 - _longest_row(tokenizer, tasks, names)
        found = [Candidate(target, text, "instruction") for text in cfg.instructions]
        for k in cfg.shots:
            for draw in range(cfg.draws):
                shots = random.Random(f"{seed}:{target}:{k}:{draw}").sample(train, min(k, len(train)))
                text = "".join(r["prompt"] + r["answer"] + cfg.separator for r in shots)
                found.append(Candidate(target, text, "k-shot"))
        for cand in found:
            ids = tokenizer(cand.prefix, add_special_tokens=False)["input_ids"]
            if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
                raise ForgeError(f"{KEY}: prefix {cand.prefix!r} has characters the tokenizer does not know; "
                                 "change specialize.bake.separator or specialize.bake.instructions")
            if budget is None or len(ids) <= budget:
                out.append(cand)
    if not out:
        raise ForgeError(f"{KEY}: no prefix candidate fits the model's {max_positions} positions with the target's "
                         "longest prompt and answer; lower specialize.bake.shots or shorten the instructions")
    return out


def _rows(tasks: Mapping, names: Sequence[str], split: str, limit: int | None) -> dict[str, list[dict]]:
    return {n: list(tasks[n][split])[:limit] if limit else list(tasks[n][split]) for n in names}


def with_prefix(rows: Sequence[dict], prefix: str) -> list[dict]:
    return [dict(r, prompt=prefix + r["prompt"]) for r in rows]


def forced_accuracy(model, tokenizer, rows_by_task: Mapping[str, list[dict]], prefix: str, batch_size: int) -> float:
    """Mean over tasks of teacher-forced exact match with ``prefix`` in front of each prompt."""
    scores = [accuracy(forced_exact_match(model, tokenizer, with_prefix(rows, prefix), batch_size=batch_size))
              for rows in rows_by_task.values()]
    return sum(scores) / len(scores)


def greedy_accuracy(model, tokenizer, rows_by_task: Mapping[str, list[dict]], prefix: str,
                    batch_size: int) -> dict[str, float]:
    """Greedy exact match per task (real generation) with ``prefix`` in front of each prompt."""
    out = {}
    for name, rows in rows_by_task.items():
        budget = max(len(tokenizer(r["answer"], add_special_tokens=False)["input_ids"]) for r in rows) + 2
        preds = greedy_answers(model, tokenizer, [prefix + r["prompt"] for r in rows], max_new_tokens=budget,
                               batch_size=batch_size)
        out[name] = accuracy(exact_match(preds, [r["answer"] for r in rows]))
    return out


def _mean(values: Mapping[str, float]) -> float:
    return sum(values.values()) / len(values)


def choose_prefix(model, tokenizer, tasks: Mapping, targets: Mapping[str, list[str]], cands: Sequence[Candidate],
                  cfg: BakeConfig) -> tuple[Candidate, dict]:
    """The candidate with the largest validation gain (the first on ties), and every candidate's figures."""
    val = {t: _rows(tasks, names, "validation", cfg.selection_limit) for t, names in targets.items()}
    unprompted = {t: forced_accuracy(model, tokenizer, val[t], "", cfg.eval_batch_size) for t in targets}
    table = []
    for cand in tqdm(cands, desc="bake: prefixes", leave=False):
        prompted = forced_accuracy(model, tokenizer, val[cand.target], cand.prefix, cfg.eval_batch_size)
        table.append({"target": cand.target, "prefix": cand.prefix, "kind": cand.kind, "prompted": prompted,
                      "unprompted": unprompted[cand.target], "gain": prompted - unprompted[cand.target]})
    best = max(range(len(cands)), key=lambda i: (table[i]["gain"], -i))
    return cands[best], {**table[best], "candidates": table}


def make_student(model, cfg: BakeConfig, *, seed: int = 0):
    """A peft LoRA around a deep copy of ``model`` (peft injects its layers in place); its random
    ``A`` matrices come from ``seed`` without touching the global generator (``B`` starts at 0)."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in cfg.modules if m not in present]
    if missing:
        raise ForgeError(f"{KEY}.modules: the model has no module named {missing[0]!r}; "
                         f"its linear layers include {', '.join(sorted(m for m in present if m.endswith('proj')))}")
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.modules), lora_dropout=0.0, bias="none")
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return get_peft_model(copy.deepcopy(model), lora)


def train_student(student, pairs: Sequence[Pair], cfg: BakeConfig, *, pad_id: int, seed: int,
                  on_curve=None) -> list[dict]:
    """Minimise the per-token KL(teacher || student) on ``pairs``; the teacher is ``student`` with its
    adapter disabled. ``on_curve(step)`` runs at each of ``cfg.curve_steps()`` (the LoRA after ``step``
    updates). Returns the loss history (one row per curve interval)."""
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    marks, order, history = set(cfg.curve_steps()), [], []
    rng, running, seen = random.Random(f"{seed}:bake"), 0.0, 0
    for step in tqdm(range(cfg.steps + 1), desc="bake", leave=False):
        if step in marks:
            if on_curve:
                on_curve(step)
            if seen:
                history.append({"step": step, "kl": running / seen})
            running, seen = 0.0, 0
        if step == cfg.steps:
            break
        if len(order) < cfg.batch_size:  # reshuffle once the pool runs out (an epoch)
            order += rng.sample(range(len(pairs)), len(pairs))
        chunk = [pairs[i] for i in order[: cfg.batch_size]]
        del order[: cfg.batch_size]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, peak=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps)
        student.train()
        with torch.no_grad(), student.disable_adapter():
            teacher = answer_logits(student, [t for t, _ in chunk], pad_id)
        loss = token_kl(teacher, answer_logits(student, [s for _, s in chunk], pad_id)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        running, seen = running + loss.item(), seen + 1
    student.eval()
    return history


def write_curve(plots_dir: str | Path, curve: Sequence[dict]) -> Path:
    """``plots_dir/bake_curve.tsv`` (columns step, accuracy) for a DVC plot."""
    path = Path(plots_dir) / "bake_curve.tsv"
    write_text_atomic(path, "step\taccuracy\n" + "".join(f"{p['step']}\t{p['accuracy']}\n" for p in curve))
    return path


def _trajectory_pairs(model, tokenizer, prompts: Sequence[str], prefix: str, *, n: int, temperature: float,
                      max_new_tokens: int, seed: int, batch_size: int) -> list[Pair]:
    answers = sample_answers(model, tokenizer, [prefix + p for p in prompts], n=n, temperature=temperature,
                             max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size)
    return [pair(tokenizer, prefix, prompts[i // n], y) for i, y in enumerate(answers)]


def _drift(model, baked, tokenizer, rows_by_task: Mapping[str, list[dict]], cfg: BakeConfig, *, seed: int) -> dict:
    """KL(base || baked) per token on answers the base samples (temperature 1) for off-target
    prompts without prefix, and both models' greedy exact match there; None/absent without such rows."""
    if not rows_by_task:
        return {"drift_kl": None}
    prompts = [r["prompt"] for rows in rows_by_task.values() for r in rows]
    budget = max(len(tokenizer(r["answer"], add_special_tokens=False)["input_ids"])
                 for rows in rows_by_task.values() for r in rows) + 2
    pairs = _trajectory_pairs(model, tokenizer, prompts, "", n=1, temperature=1.0, max_new_tokens=budget, seed=seed,
                              batch_size=cfg.eval_batch_size)
    return {"drift_kl": mean_kl(model, baked, pairs, tokenizer.pad_token_id, batch_size=cfg.eval_batch_size),
            "off_target_base": _mean(greedy_accuracy(model, tokenizer, rows_by_task, "", cfg.eval_batch_size)),
            "off_target_baked": _mean(greedy_accuracy(baked, tokenizer, rows_by_task, "", cfg.eval_batch_size))}


def bake(model, tokenizer, tasks: Mapping, cfg: BakeConfig, *, seed: int,
         plots_dir: str | Path | None = None) -> BakeResult:
    """Choose a prefix on validation, bake it into a merged LoRA, report on test (module docstring).

    ``model``'s weights are not touched (it is left in eval mode); ``result.model`` is a new model.
    ``plots_dir``: where ``bake_curve.tsv`` is written (none when None)."""
    started = time.perf_counter()
    model.eval()
    pad_id = tokenizer.pad_token_id
    max_positions = getattr(model.config, "max_position_embeddings", None)
    targets = target_tasks(tasks, cfg.target)
    cands = candidates(tokenizer, tasks, targets, cfg, seed=seed, max_positions=max_positions)
    chosen, validation = choose_prefix(model, tokenizer, tasks, targets, cands, cfg)
    names, prefix = targets[chosen.target], chosen.prefix
    helps = validation["gain"] >= cfg.min_gain
    seconds = {"choose": time.perf_counter() - started}

    # Trajectories from the prompted model on the target's train inputs; sampled answers may run a
    # little past the longest reference, never past the model's positions (for any split's prompt).
    rows = [r for n in names for split in tasks[n].values() for r in split]
    longest_answer = max(len(tokenizer(r["answer"], add_special_tokens=False)["input_ids"]) for r in rows)
    longest_prompt = max(len(tokenizer(prefix + r["prompt"])["input_ids"]) for r in rows)
    room = math.inf if max_positions is None else max_positions - longest_prompt
    max_new = int(min(longest_answer + 2, room))
    train = [r["prompt"] for n in names for r in tasks[n]["train"]]
    prompts = random.Random(f"{seed}:bake:prompts").sample(train, min(cfg.prompts, len(train)))
    pairs = _trajectory_pairs(model, tokenizer, prompts, prefix, n=cfg.trajectories, temperature=cfg.temperature,
                              max_new_tokens=max_new, seed=seed, batch_size=cfg.eval_batch_size)

    seconds["sample"] = time.perf_counter() - started - sum(seconds.values())
    val = _rows(tasks, names, "validation", cfg.selection_limit)
    student = make_student(model, cfg, seed=seed)
    curve: list[dict] = []

    def on_curve(step: int) -> None:
        curve.append({"step": step, "accuracy": forced_accuracy(student, tokenizer, val, "", cfg.eval_batch_size)})

    history = train_student(student, pairs, cfg, pad_id=pad_id, seed=seed, on_curve=on_curve)
    check_rows = [s for _, s in pairs[: cfg.eval_batch_size]]
    with torch.no_grad():
        before_merge = answer_logits(student, check_rows, pad_id)
    baked = student.merge_and_unload().eval()
    with torch.no_grad():
        merge_diff = (answer_logits(baked, check_rows, pad_id) - before_merge).abs().max().item()

    seconds["bake"] = time.perf_counter() - started - sum(seconds.values())
    test = _rows(tasks, names, "test", cfg.eval_limit)
    per_task = {"prompted_base": greedy_accuracy(model, tokenizer, test, prefix, cfg.eval_batch_size),
                "unprompted_base": greedy_accuracy(model, tokenizer, test, "", cfg.eval_batch_size),
                "baked": greedy_accuracy(baked, tokenizer, test, "", cfg.eval_batch_size)}
    test_prompts = [r["prompt"] for rows in test.values() for r in rows]
    kl_pairs = _trajectory_pairs(model, tokenizer, test_prompts, prefix, n=1, temperature=1.0, max_new_tokens=max_new,
                                 seed=seed + 1, batch_size=cfg.eval_batch_size)
    kl_base = mean_kl(model, model, kl_pairs, pad_id, batch_size=cfg.eval_batch_size)
    kl_baked = mean_kl(model, baked, kl_pairs, pad_id, batch_size=cfg.eval_batch_size)

    off_target = [n for n in tasks if n not in names]
    drift = _drift(model, baked, tokenizer, _rows(tasks, off_target, "test", cfg.drift_limit), cfg, seed=seed + 2)

    seconds["report"] = time.perf_counter() - started - sum(seconds.values())
    figures = {k: _mean(v) for k, v in per_task.items()}
    gain = figures["prompted_base"] - figures["unprompted_base"]
    merged = helps or cfg.bake_unhelpful
    metrics = {
        **figures, "kl_base": kl_base, "kl_baked": kl_baked, **drift,
        "target": chosen.target, "tasks": list(names), "prefix": prefix, "prefix_kind": chosen.kind,
        "prefix_helps": helps, "merged": merged, "gain": gain,
        "recovered_fraction": (figures["baked"] - figures["unprompted_base"]) / gain if gain else None,
        "per_task": {n: {k: v[n] for k, v in per_task.items()} for n in names},
        "validation": validation, "drift_tasks": off_target, "steps": cfg.steps, "trajectories": len(pairs),
        "kl_history": history, "merge_max_abs_logit_diff": merge_diff, "curve_split": "validation",
        "seconds": time.perf_counter() - started, "seconds_by_phase": seconds,
    }
    if plots_dir is not None:
        write_curve(plots_dir, curve)
    return BakeResult(model=baked if merged else copy.deepcopy(model), metrics=metrics, curve=curve)
