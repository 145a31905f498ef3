"""Scoring answers: answer loss, exact match, family mean and perplexity, for training and evaluation.

A row is ``<bos> prompt answer <eos>`` with labels IGNORE outside ``answer <eos>``
(:mod:`forgelib.data.batching`). Everything here is a pure function of logits, labels or
scores; batching over a model lives in :mod:`forgelib.eval.evaluate`.

- **Answer loss**: cross-entropy on the answer tokens and ``<eos>`` only. The training loss is
  its mean over every answer token of a batch; perplexity is ``exp`` of the same per-token mean.
- **Exact match** has two forms that agree. From generated text: the stripped answer equals
  the reference. From one teacher-forced pass: every answer token is the argmax of the model's
  next-token distribution given the true prefix. By induction over positions the second is
  exactly the condition for greedy decoding to emit the answer and stop (up to ties between
  logits), so training and EvoMerge fitness get greedy exact match from the forward pass they
  already pay for; ``tests/eval`` checks the two agree.
- **Family mean**: a family's score is the mean of its tasks' scores, and a model's score is
  the mean over families, so a family with more tasks does not dominate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from forgelib.data.batching import IGNORE


@dataclass(frozen=True)
class AnswerScores:
    """Answer scores of a batch of rows (one forward pass, or several concatenated)."""

    loss: Tensor
    """Scalar: mean NLL over every answer token (the training loss; keeps the logits' graph)."""
    nll: Tensor
    """(B,) summed answer-token NLL of each row, in nats, detached."""
    n_tokens: Tensor
    """(B,) answer tokens (with ``<eos>``) scored in each row."""
    correct: Tensor
    """(B,) bool: every answer token is the argmax (= greedy exact match)."""

    @property
    def example_loss(self) -> Tensor:
        """(B,) mean answer-token NLL of each row."""
        return self.nll / self.n_tokens.clamp(min=1)

    @staticmethod
    def cat(parts: Sequence["AnswerScores"]) -> "AnswerScores":
        """The scores of several batches as one; ``loss`` becomes the mean over all their tokens."""
        if not parts:
            empty = torch.zeros(0)
            return AnswerScores(empty.sum(), empty, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.bool))
        nll = torch.cat([p.nll.cpu() for p in parts])
        n_tokens = torch.cat([p.n_tokens.cpu() for p in parts])
        return AnswerScores(nll.sum() / n_tokens.sum().clamp(min=1), nll, n_tokens,
                            torch.cat([p.correct.cpu() for p in parts]))


def score_answers(logits: Tensor, labels: Tensor) -> AnswerScores:
    """Answer loss and teacher-forced exact match of ``logits`` (B, T, V) against ``labels`` (B, T)."""
    logits = logits[:, :-1].float()  # position t predicts token t + 1
    targets = labels[:, 1:]
    mask = targets != IGNORE
    token_nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none") * mask  # (B, T-1)
    n_tokens = mask.sum(dim=1)
    correct = ((logits.argmax(dim=-1) == targets) | ~mask).all(dim=1) & (n_tokens > 0)
    return AnswerScores(
        loss=token_nll.sum() / n_tokens.sum().clamp(min=1),
        nll=token_nll.sum(dim=1).detach(),
        n_tokens=n_tokens,
        correct=correct,
    )


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> list[bool]:
    """Whether each generated answer equals its reference, surrounding whitespace stripped."""
    return [p.strip() == r.strip() for p, r in zip(predictions, references)]


def accuracy(hits: Sequence[bool]) -> float:
    """The fraction of true ``hits`` (0.0 for none)."""
    return sum(hits) / len(hits) if hits else 0.0


def accuracy_by_task(tasks: Sequence[str], hits: Sequence[bool]) -> dict[str, float]:
    """Exact match per task, ``tasks[i]`` being row i's task (tasks in order of first appearance)."""
    by_task: dict[str, list[bool]] = {}
    for task, hit in zip(tasks, hits):
        by_task.setdefault(task, []).append(bool(hit))
    return {task: accuracy(v) for task, v in by_task.items()}


def family_scores(task_scores: Mapping[str, float], family_of: Mapping[str, str]) -> dict[str, float]:
    """Each family's score: the mean of its tasks' scores (families in order of first task)."""
    by_family: dict[str, list[float]] = {}
    for task, score in task_scores.items():
        by_family.setdefault(family_of[task], []).append(score)
    return {family: sum(v) / len(v) for family, v in by_family.items()}


def family_mean(families: Mapping[str, float]) -> float:
    """A model's score: the mean over families (0.0 when there are none)."""
    return sum(families.values()) / len(families) if families else 0.0


def mean_nll(nll: Sequence[float], n_tokens: Sequence[int]) -> float:
    """Token-weighted mean NLL (nats per token) from per-row sums and token counts."""
    total = sum(n_tokens)
    return sum(nll) / total if total else float("nan")


def perplexity(nll: Sequence[float], n_tokens: Sequence[int]) -> float:
    """``exp(sum NLL / sum tokens)``: long answers weigh by their length, as in corpus perplexity."""
    return math.exp(mean_nll(nll, n_tokens))
