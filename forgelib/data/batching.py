"""Turn (prompt, answer) rows into causal-LM training tensors.

A sequence is ``<bos> prompt answer <eos>``; the loss covers the answer and ``<eos>`` only
(labels are -100 on ``<bos>`` and the prompt), as in the Grokfast setup where only the answer
token is scored.
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

import torch

IGNORE = -100


def encode(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    prompt_ids = tokenizer(prompt)["input_ids"]  # starts with <bos>
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad encoded rows to one batch."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(labs)] = torch.tensor(labs)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def encode_rows(tokenizer, rows: Sequence[dict]) -> list[tuple[list[int], list[int]]]:
    return [encode(tokenizer, r["prompt"], r["answer"]) for r in rows]


def batches(encoded: Sequence, *, batch_size: int, pad_id: int, seed: int, epoch: int = 0) -> Iterator[dict]:
    """One shuffled pass over ``encoded``; the order depends only on (seed, epoch)."""
    order = list(range(len(encoded)))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    for start in range(0, len(order), batch_size):
        yield collate([encoded[i] for i in order[start : start + batch_size]], pad_id)


def infinite_batches(encoded: Sequence, *, batch_size: int, pad_id: int, seed: int, start_step: int = 0) -> Iterator[dict]:
    """Endless epochs of shuffled batches; ``start_step`` skips ahead so a resumed run sees the
    same batches an uninterrupted run would."""
    per_epoch = max(1, (len(encoded) + batch_size - 1) // batch_size)
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        for i, batch in enumerate(batches(encoded, batch_size=batch_size, pad_id=pad_id, seed=seed, epoch=epoch)):
            if i >= skip:
                yield batch
        epoch, skip = epoch + 1, 0
