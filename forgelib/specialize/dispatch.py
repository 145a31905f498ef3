"""Transformer²'s first pass: a classification expert decides which family expert adapts a prompt.

As in the paper's classification-expert variant (Sun et al. 2025, arXiv 2501.06252), the
classifier is itself an SVF expert: a z vector trained with cross-entropy on one token so that,
after a task prompt, the model's next token is the family's label, one character per family
(:func:`family_labels`). At run
time only the label tokens' logits are compared (:func:`classify`), so every prompt gets a
family.

**This is near-trivial here.** Every task of the embedded default announces itself in its
format: ``rev:``/``cpy:``/``srt:`` (string), ``par:``/``bal:`` (logic), ``%97=`` (modular), a bare
``a+b=`` (arithmetic). A lookup on the prefix would be as accurate. The dispatch accuracy the
stage reports measures that the mechanism works, not that classification is hard.
"""

from __future__ import annotations

import random
from typing import Mapping, Sequence

import torch

from forgelib.data.batching import IGNORE
from forgelib.data.tasks import get_task
from forgelib.errors import ForgeError
from forgelib.specialize.experts import train_expert
from forgelib.specialize.svf import Expert, Factors, svf_applied


def family_labels(families: Sequence[str], tokenizer) -> dict[str, str]:
    """One distinct single-token character per family: the first of its name's letters not taken."""
    labels: dict[str, str] = {}
    for family in families:
        for ch in family + "abcdefghijklmnopqrstuvwxyz":
            if ch not in labels.values() and len(tokenizer(ch, add_special_tokens=False)["input_ids"]) == 1:
                labels[family] = ch
                break
        else:
            raise ForgeError(f"no single-token label character left for family {family!r}")
    return labels


def dispatch_rows(tasks: Mapping, labels: Mapping[str, str], *, split: str, per_family: int | None,
                  seed: int) -> list[dict]:
    """Rows ``{prompt, answer: label}``, at most ``per_family`` per family (a seeded draw), so the
    classifier sees the families equally often however many tasks each has."""
    by_family: dict[str, list[str]] = {}
    for name, splits in tasks.items():
        by_family.setdefault(get_task(name).family, []).extend(splits[split]["prompt"])
    rows = []
    for family, prompts in by_family.items():
        if per_family is not None and len(prompts) > per_family:
            prompts = random.Random(f"{seed}:dispatch:{family}").sample(prompts, per_family)
        rows += [{"prompt": p, "answer": labels[family]} for p in prompts]
    return rows


def label_ids(tokenizer, labels: Mapping[str, str]) -> dict[str, int]:
    return {family: tokenizer(ch, add_special_tokens=False)["input_ids"][0] for family, ch in labels.items()}


def encode_label_rows(tokenizer, rows: Sequence[dict]) -> list[tuple[list[int], list[int]]]:
    """``<bos> prompt label`` with the loss on the label only: no ``<eos>`` after it, since only
    the label's logit is ever read (a 1-layer test model learnt the label alone far faster)."""
    encoded = []
    for row in rows:
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        label = tokenizer(row["answer"], add_special_tokens=False)["input_ids"]
        encoded.append((prompt_ids + label, [IGNORE] * len(prompt_ids) + label))
    return encoded


def train_dispatcher(model, tokenizer, svd: Mapping[str, Factors], tasks: Mapping, labels: Mapping[str, str], *,
                     steps: int, lr: float, batch_size: int, rows_per_family: int, max_mult: float, grad_clip: float,
                     warmup_steps: int, seed: int) -> Expert:
    """The classification expert: a z vector trained with cross-entropy on the label token."""
    rows = dispatch_rows(tasks, labels, split="train", per_family=rows_per_family, seed=seed)
    expert, _ = train_expert(model, tokenizer, svd, rows, method="ce", steps=steps, lr=lr, batch_size=batch_size,
                             max_mult=max_mult, grad_clip=grad_clip, warmup_steps=warmup_steps, seed=seed,
                             encoded=encode_label_rows(tokenizer, rows), desc="svf dispatch")
    return expert


@torch.no_grad()
def classify(model, tokenizer, svd: Mapping[str, Factors], expert: Expert | None, max_mult: float,
             prompts: Sequence[str], labels: Mapping[str, str], *, batch_size: int = 256) -> list[str]:
    """The family whose label token gets the highest logit after each prompt (``expert`` applied)."""
    families = list(labels)
    ids = torch.tensor([label_ids(tokenizer, labels)[f] for f in families])
    tokenizer.padding_side = "left"  # the last position of every row is then the prompt's end
    out: list[str] = []
    was_training = model.training
    model.eval()
    with svf_applied(model, svd, expert, max_mult):
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True)
            positions = (enc["attention_mask"].cumsum(dim=-1) - 1).clamp(min=0)  # as generate() numbers them
            logits = model(**enc, position_ids=positions).logits[:, -1, ids]  # (B, families)
            out += [families[i] for i in logits.argmax(dim=-1).tolist()]
    model.train(was_training)
    return out


def dispatch_accuracy(model, tokenizer, svd: Mapping[str, Factors], expert: Expert, max_mult: float, tasks: Mapping,
                      labels: Mapping[str, str], *, split: str = "test", batch_size: int = 256) -> dict:
    """Accuracy of :func:`classify` on every row of ``split``, overall and per family."""
    prompts, truth = [], []
    for name, splits in tasks.items():
        prompts += list(splits[split]["prompt"])
        truth += [get_task(name).family] * len(splits[split])
    chosen = classify(model, tokenizer, svd, expert, max_mult, prompts, labels, batch_size=batch_size)
    per_family = {}
    for family in labels:
        hits = [c == t for c, t in zip(chosen, truth) if t == family]
        per_family[family] = sum(hits) / len(hits) if hits else None
    return {"accuracy": sum(c == t for c, t in zip(chosen, truth)) / len(truth), "per_family": per_family,
            "n": len(truth)}
