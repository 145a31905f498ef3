"""Batched sequences for thinking and pausing models: padding, hidden states, greedy decoding.

Prompts are left-padded so that every row's answer starts at the same column, with position ids
that start at 0 on each row's first real token (the models were trained on unpadded rows, so
padding shifts nothing). Greedy answer decoding recomputes the whole prefix at each of its few
steps; thought sampling, which runs at every training step, uses the model's key-value cache
(:meth:`forgelib.quietstar.model.ThinkingModel.sample_thoughts`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """(ids, mask) of ``seqs`` padded on the left, so every row ends at the same column."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
    return ids, mask


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """(ids, mask) of ``seqs`` padded on the right."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def positions(mask: Tensor) -> Tensor:
    """Position ids that start at 0 on each row's first real token (left padding shifts none)."""
    return (mask.cumsum(dim=-1) - 1).clamp(min=0)


def last_hidden(lm, ids: Tensor, mask: Tensor) -> Tensor:
    """(N, T, H) final-norm hidden states of ``lm``'s decoder (what its LM head reads)."""
    return lm.base_model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False).last_hidden_state


@torch.no_grad()
def greedy_continue(next_logits: Callable[[Tensor], Tensor], batch: int, *, max_new_tokens: int, eos_id: int,
                    pad_id: int) -> Tensor:
    """(B, <= max_new_tokens) greedy tokens; ``next_logits(generated (B, t))`` scores token t.

    A row that has emitted ``eos_id`` continues with ``pad_id``; decoding stops when all have."""
    out = torch.zeros((batch, 0), dtype=torch.long)
    done = torch.zeros(batch, dtype=torch.bool)
    for _ in range(max_new_tokens):
        nxt = next_logits(out).argmax(dim=-1)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out = torch.cat([out, nxt[:, None]], dim=1)
        done |= nxt == eos_id
        if done.all():
            break
    return out


def decode_answers(tokenizer, tokens: Tensor) -> list[str]:
    """Each row's text up to its first ``<eos>``, special tokens removed."""
    texts = []
    for row in tokens.tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts
