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


@torch.no_grad()
def answer_nll(model, tokenizer, rows, *, batch_size: int = 256) -> tuple[list[float], list[int]]:
    """Summed NLL (nats) and scored-token count of each row's answer + ``<eos>``."""
    encoded = encode_rows(tokenizer, rows)
    nll, counts = [], []
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start : start + batch_size], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        mask = labels != -100
        picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
        nll += (-picked.sum(dim=1)).tolist()
        counts += mask.sum(dim=1).tolist()
    return nll, counts


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
