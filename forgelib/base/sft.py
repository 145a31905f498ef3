"""Plain supervised fine-tuning: the loop that pretrains the ancestor and fine-tunes specialists.

AdamW with linear warmup and cosine decay (:mod:`forgelib.train.schedule`), loss on answer tokens
only. Deterministic for a given seed and thread count: batch order comes from
``forgelib.data.batching`` and the model's dropout-free Llama blocks add no other randomness. The enhanced Forge loop (Grokfast,
curriculum, geometry, dreams) lives in ``forgelib.train.forge_loop``; this one stays minimal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from forgelib.data.batching import infinite_batches
from forgelib.train.schedule import learning_rate


@dataclass(frozen=True)
class SFTSettings:
    steps: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    warmup_steps: int = 20
    seed: int = 0
    log_every: int = 25


def train_sft(
    model,
    encoded: Sequence[tuple[list[int], list[int]]],
    settings: SFTSettings,
    *,
    pad_id: int,
    log: Callable[[int, dict], None] | None = None,
    desc: str = "train",
) -> list[dict]:
    """Train ``model`` in place on ``encoded`` rows; returns the logged history."""
    torch.manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.98))
    stream = infinite_batches(encoded, batch_size=settings.batch_size, pad_id=pad_id, seed=settings.seed)
    history: list[dict] = []
    model.train()
    running, started = 0.0, time.perf_counter()
    bar = tqdm(range(settings.steps), desc=desc, leave=False, mininterval=1.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, peak=settings.lr, warmup_steps=settings.warmup_steps,
                                        total_steps=settings.steps)
        batch = next(stream)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running += loss.item()
        if (step + 1) % settings.log_every == 0 or step + 1 == settings.steps:
            n = (step % settings.log_every) + 1
            row = {
                "step": step + 1,
                "loss": running / n,
                "grad_norm": float(grad_norm),
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - started,
            }
            running = 0.0
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            if log:
                log(step + 1, row)
    model.eval()
    return history
