"""Held-out evaluation: per-task exact match (greedy pass@1) and answer-token perplexity.

The metrics are local ``evaluate`` modules (``forgelib/eval/metrics/*``) loaded by path, since
hub metric scripts are unreachable here. The result has the contract shape read by reviewers::

    {"tasks": {TASK: {"exact_match": float, "n": int}}, "families": {FAMILY: float},
     "mean": float, "perplexity": float}

``families`` averages the tasks of a family; ``mean`` averages the families, so a family with
more tasks does not dominate.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from forgelib.data.batching import collate, encode_rows
from forgelib.data.tasks import get_task
from forgelib.eval.generate import greedy_answers

METRICS_DIR = Path(__file__).parent / "metrics"


@functools.lru_cache(maxsize=None)
def load_metric(name: str):
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))


LOGITS_BUDGET = 256 << 20
"""Bytes of float32 logits one scoring forward pass may produce. With a 49k vocabulary, 40 rows
of 160 tokens already make 1.25 GB of logits; the embedded default's 51-token vocabulary never
comes near the budget, so its batches (and results) do not depend on it."""


def _row_batches(encoded: list, batch_size: int, vocab: int) -> list[list]:
    """Consecutive slices of at most ``batch_size`` rows whose padded logits fit LOGITS_BUDGET
    (a single row always forms a batch, however long)."""
    out, current, longest = [], [], 0
    for row in encoded:
        width = max(longest, len(row[0]))
        if current and (len(current) == batch_size or (len(current) + 1) * width * vocab * 4 > LOGITS_BUDGET):
            out.append(current)
            current, width = [], len(row[0])
        current.append(row)
        longest = width
    return out + ([current] if current else [])


def _vocab(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


@torch.no_grad()
def answer_nll(model, tokenizer, rows, *, batch_size: int = 256) -> tuple[list[float], list[int]]:
    """Summed NLL (nats) and scored-token count of each row's answer + ``<eos>``.

    The log-softmax runs only at the scored positions (the answer is a few tokens of a long
    prompt), which keeps a large vocabulary's memory to one logits tensor.
    """
    encoded = encode_rows(tokenizer, rows)
    nll, counts = [], []
    for chunk in _row_batches(encoded, batch_size, _vocab(model)):
        batch = collate(chunk, tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        mask = labels != -100
        logp = torch.log_softmax(logits[mask].float(), dim=-1)
        del logits
        picked = torch.zeros(mask.shape, dtype=logp.dtype)
        picked[mask] = logp.gather(-1, labels[mask].unsqueeze(-1)).squeeze(-1)
        nll += (-picked.sum(dim=1)).tolist()
        counts += mask.sum(dim=1).tolist()
    return nll, counts


@torch.no_grad()
def forced_exact_match(model, tokenizer, rows, *, batch_size: int = 256) -> list[bool]:
    """Greedy exact match computed from one teacher-forced forward pass per batch.

    Greedy decoding emits ``answer <eos>`` exactly when, at every answer position, the argmax
    given the true prefix is the true token (induction over positions: while the output matches,
    the model sees the same prefix as under teacher forcing). So this equals
    ``greedy_answers(...) == answer`` (up to argmax ties), at the cost of a single forward pass
    instead of one per generated token. EvoMerge fitness uses it; reported test metrics use
    real generation, and ``tests/eval`` checks the two agree.
    """
    encoded = encode_rows(tokenizer, rows)
    hits: list[bool] = []
    for chunk in _row_batches(encoded, batch_size, _vocab(model)):
        batch = collate(chunk, tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        predicted = logits[:, :-1].argmax(dim=-1)
        mask = labels != -100
        hits += ((predicted == labels) | ~mask).all(dim=1).tolist()
    return hits


def fast_mean_exact_match(model, tokenizer, tasks: dict, *, split: str = "validation", limit: int | None = None,
                          batch_size: int = 256) -> dict:
    """Per-task and per-family exact match and the family mean, via ``forced_exact_match``."""
    per_task, by_family = {}, {}
    for name, splits in tasks.items():
        rows = splits[split]
        rows = list(rows.select(range(min(limit, len(rows))))) if limit is not None else list(rows)
        hits = forced_exact_match(model, tokenizer, rows, batch_size=batch_size)
        per_task[name] = {"exact_match": sum(hits) / len(hits), "n": len(hits)}
        by_family.setdefault(get_task(name).family, []).append(per_task[name]["exact_match"])
    families = {fam: sum(v) / len(v) for fam, v in by_family.items()}
    return {"tasks": per_task, "families": families, "mean": sum(families.values()) / len(families)}


def evaluate_model(model, tokenizer, tasks: dict, *, split: str = "test", limit: int | None = None, batch_size: int = 256) -> dict:
    """Exact match per task and family, their mean, and answer perplexity on ``split``."""
    exact_match = load_metric("exact_match")
    perplexity = load_metric("token_perplexity")
    per_task: dict[str, dict] = {}
    by_family: dict[str, list[float]] = {}
    all_nll: list[float] = []
    all_counts: list[int] = []
    for name, splits in tasks.items():
        rows = splits[split]
        if limit is not None:
            rows = rows.select(range(min(limit, len(rows))))
        rows = list(rows)
        budget = max(len(r["answer"]) for r in rows) + 2
        preds = greedy_answers(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=budget, batch_size=batch_size)
        score = exact_match.compute(predictions=preds, references=[r["answer"] for r in rows])
        per_task[name] = {"exact_match": float(score["exact_match"]), "n": int(score["n"])}
        by_family.setdefault(get_task(name).family, []).append(per_task[name]["exact_match"])
        nll, counts = answer_nll(model, tokenizer, rows, batch_size=batch_size)
        all_nll += nll
        all_counts += counts
    families = {fam: sum(v) / len(v) for fam, v in by_family.items()}
    ppl = perplexity.compute(nll=all_nll, n_tokens=all_counts)
    return {
        "tasks": per_task,
        "families": families,
        "mean": sum(families.values()) / len(families) if families else 0.0,
        "perplexity": float(ppl["perplexity"]),
    }
