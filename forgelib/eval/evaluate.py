"""Held-out evaluation of a loaded model: per-task exact match (greedy pass@1) and answer perplexity.

The reported metrics are local ``evaluate`` modules (``forgelib/eval/metrics/*``) loaded by path,
since hub metric scripts are unreachable here; they and every other score go through
:mod:`forgelib.eval.scoring`. The result has the contract shape read by reviewers::

    {"tasks": {TASK: {"exact_match": float, "n": int}}, "families": {FAMILY: float},
     "mean": float, "perplexity": float}

``families`` averages the tasks of a family; ``mean`` averages the families, so a family with
more tasks does not dominate.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from forgelib.data.batching import collate, encode_rows
from forgelib.data.tasks import get_task
from forgelib.eval.generate import greedy_answers
from forgelib.eval.scoring import AnswerScores, accuracy, family_mean, family_scores, score_answers

METRICS_DIR = Path(__file__).parent / "metrics"


@functools.lru_cache(maxsize=None)
def load_metric(name: str):
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))


LOGITS_BUDGET = 256 << 20
"""Bytes of float32 logits one scoring forward pass may produce (the answer loss briefly holds
two more tensors of that size). With a 49k vocabulary, 40 rows of 160 tokens already make
1.25 GB of logits; the embedded default's 51-token vocabulary never comes near the budget, so
its batches (and results) do not depend on it."""


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
def score_rows(model, tokenizer, rows: Sequence[dict], *, batch_size: int = 256) -> AnswerScores:
    """Answer NLL and teacher-forced exact match of each row (dicts with prompt, answer), in order.

    One forward pass per batch of :func:`_row_batches`; the in-loop evaluation, the dream
    buffer, EvoMerge fitness and reported perplexity all score rows with it.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts = []
    for chunk in _row_batches(encode_rows(tokenizer, rows), batch_size, _vocab(model)):
        batch = {k: v.to(device) for k, v in collate(chunk, tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        parts.append(score_answers(logits, batch["labels"]))
        del logits
    model.train(was_training)
    return AnswerScores.cat(parts)


def forced_exact_match(model, tokenizer, rows: Sequence[dict], *, batch_size: int = 256) -> list[bool]:
    """Greedy exact match from one teacher-forced pass per batch (see :mod:`forgelib.eval.scoring`).

    Equals ``greedy_answers(...) == answer`` up to argmax ties, at the cost of a single forward
    pass instead of one per generated token. EvoMerge fitness uses it; reported test metrics use
    real generation.
    """
    return score_rows(model, tokenizer, rows, batch_size=batch_size).correct.tolist()


def task_rows(splits, split: str, limit: int | None) -> list[dict]:
    """The first ``limit`` rows (all when None) of one task's ``split``."""
    rows = splits[split]
    return list(rows.select(range(min(limit, len(rows))))) if limit is not None else list(rows)


def _family_of(tasks: Mapping) -> dict[str, str]:
    return {name: get_task(name).family for name in tasks}


def fast_mean_exact_match(model, tokenizer, tasks: Mapping, *, split: str = "validation", limit: int | None = None,
                          batch_size: int = 256) -> dict:
    """Per-task and per-family exact match and the family mean, via ``forced_exact_match``."""
    per_task = {}
    for name, splits in tasks.items():
        hits = forced_exact_match(model, tokenizer, task_rows(splits, split, limit), batch_size=batch_size)
        per_task[name] = {"exact_match": accuracy(hits), "n": len(hits)}
    families = family_scores({name: r["exact_match"] for name, r in per_task.items()}, _family_of(tasks))
    return {"tasks": per_task, "families": families, "mean": family_mean(families)}


def evaluate_answers(answer_fn: Callable[[list[str], int], list[str]], tasks: Mapping, *, split: str = "test",
                     limit: int | None = None,
                     nll_fn: Callable[[list[dict]], tuple[Sequence[float], Sequence[int]]] | None = None) -> dict:
    """Exact match per task and family and their mean, for any way of answering.

    ``answer_fn(prompts, max_new_tokens)`` answers one task's prompts (the budget is the task's
    longest answer + 2); ``nll_fn(rows)``, when given, returns each row's summed answer NLL and
    token count, and adds ``perplexity`` over every task. A plain model, a specialized model
    that adapts per prompt and a thinking model are all scored here, the same way.
    """
    exact_match = load_metric("exact_match")
    per_task: dict[str, dict] = {}
    all_nll: list[float] = []
    all_counts: list[int] = []
    for name, splits in tasks.items():
        rows = task_rows(splits, split, limit)
        budget = max(len(r["answer"]) for r in rows) + 2
        preds = answer_fn([r["prompt"] for r in rows], budget)
        score = exact_match.compute(predictions=preds, references=[r["answer"] for r in rows])
        per_task[name] = {"exact_match": float(score["exact_match"]), "n": int(score["n"])}
        if nll_fn is not None:
            nll, counts = nll_fn(rows)
            all_nll += list(nll)
            all_counts += list(counts)
    families = family_scores({name: r["exact_match"] for name, r in per_task.items()}, _family_of(tasks))
    result = {"tasks": per_task, "families": families, "mean": family_mean(families)}
    if nll_fn is not None:
        result["perplexity"] = float(load_metric("token_perplexity").compute(nll=all_nll, n_tokens=all_counts)["perplexity"])
    return result


def evaluate_model(model, tokenizer, tasks: Mapping, *, split: str = "test", limit: int | None = None,
                   batch_size: int = 256) -> dict:
    """Exact match per task and family, their mean, and answer perplexity on ``split``."""

    def answer(prompts: list[str], budget: int) -> list[str]:
        return greedy_answers(model, tokenizer, prompts, max_new_tokens=budget, batch_size=batch_size)

    def nll(rows: list[dict]) -> tuple[list[float], list[int]]:
        scores = score_rows(model, tokenizer, rows, batch_size=batch_size)
        return scores.nll.tolist(), scores.n_tokens.tolist()

    return evaluate_answers(answer, tasks, split=split, limit=limit, nll_fn=nll)
