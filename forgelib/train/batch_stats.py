"""Per-example answer loss and exact match from one teacher-forced forward pass.

An example counts as solved when every answer token (and ``<eos>``) is the argmax of the model's
next-token distribution given the true prefix. By induction over positions this is exactly the
condition for greedy decoding to emit the answer and stop, so it *is* greedy exact match (up to
exact ties between logits), at the cost of the training forward pass already paid for. The edge
curriculum, the dream buffer and the in-loop evaluation all use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from forgelib.data.batching import IGNORE, collate, encode_rows


@dataclass(frozen=True)
class AnswerStats:
    token_loss: Tensor
    """Scalar: mean NLL over all answer tokens of the batch (the training loss)."""
    example_loss: Tensor
    """(B,) mean answer-token NLL per example, detached."""
    correct: Tensor
    """(B,) bool: all answer tokens argmax-correct (= greedy exact match)."""


def answer_stats(logits: Tensor, labels: Tensor) -> AnswerStats:
    """``logits`` (B, T, V) and ``labels`` (B, T) with IGNORE outside the answer."""
    logits = logits[:, :-1].float()  # position t predicts token t + 1
    targets = labels[:, 1:]
    mask = targets != IGNORE
    nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none") * mask  # (B, T-1)
    counts = mask.sum(dim=1)
    correct = ((logits.argmax(dim=-1) == targets) | ~mask).all(dim=1) & (counts > 0)
    return AnswerStats(
        token_loss=nll.sum() / counts.sum().clamp(min=1),
        example_loss=(nll.sum(dim=1) / counts.clamp(min=1)).detach(),
        correct=correct,
    )


@torch.no_grad()
def score_rows(model, tokenizer, rows: Sequence[dict], *, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Per-example answer loss (N,) and exact match (N,) of ``rows`` (dicts with prompt, answer)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = encode_rows(tokenizer, rows)
    losses, correct = [], []
    for start in range(0, len(encoded), batch_size):
        batch = {k: v.to(device) for k, v in collate(encoded[start : start + batch_size], tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        stats = answer_stats(logits, batch["labels"])
        losses.append(stats.example_loss.cpu())
        correct.append(stats.correct.cpu())
    model.train(was_training)
    if not losses:
        return torch.zeros(0), torch.zeros(0, dtype=torch.bool)
    return torch.cat(losses), torch.cat(correct)


def accuracy_by_family(rows: Sequence[dict], correct: Tensor) -> tuple[dict[str, float], dict[str, float]]:
    """Exact match per task and per family (a family is the mean of its tasks, as in eval)."""
    hits: dict[str, list[bool]] = {}
    family_of: dict[str, str] = {}
    for row, ok in zip(rows, correct.tolist()):
        hits.setdefault(row["task"], []).append(ok)
        family_of[row["task"]] = row["family"]
    per_task = {task: sum(v) / len(v) for task, v in hits.items()}
    by_family: dict[str, list[float]] = {}
    for task, acc in per_task.items():
        by_family.setdefault(family_of[task], []).append(acc)
    return per_task, {fam: sum(v) / len(v) for fam, v in by_family.items()}
