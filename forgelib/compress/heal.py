"""Quantization-aware "heal" fine-tune after ternarization (BitNet b1.58 with a lambda ramp).

Ternarizing a full-precision model without training collapses it (arXiv 2402.17764; the
Hugging Face "Fine-tuning LLMs to 1.58bit" study shows the ramp ``lam = min(step/ramp, 1)``
recovers it). The chosen nn.Linear layers become :class:`BitLinear` for the heal, train on the
caller's batches with the straight-through estimator, and are swapped back, so the latent
full-precision weights are what the bitnet158 codec then ternarizes (exactly as in training).
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from forgelib.compress.bitlinear import ramp, set_lambda, swap_bitlinear_for_linear, swap_linear_for_bitlinear
from forgelib.compress.config import HealConfig
from forgelib.errors import ForgeError
from forgelib.train.schedule import learning_rate

LOG_POINTS = 20  # losses kept in the report (evenly spaced), enough for a curve


def heal(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], config: HealConfig,
         include: Callable[[str], bool], *, seed: int, ternarize: bool = True) -> dict:
    """Fine-tune ``model`` in place with BitLinear on the modules ``include`` selects.

    ``batches`` yields dicts with ``input_ids``, ``attention_mask`` and ``labels`` (-100 where
    no loss), e.g. built with ``forgelib.data.batching.collate``; it must last ``config.steps``
    batches (pass ``itertools.cycle(...)`` for a small set). ``ternarize=False`` swaps nothing:
    the same loop in full precision, the heal's control arm (``bench/heal_control.py``).
    """
    swapped = []
    if ternarize:
        swapped = swap_linear_for_bitlinear(model, include, quantize_activations=config.quantize_activations)
        if not swapped:
            raise ForgeError("compress.heal: no nn.Linear is assigned to bitnet158, nothing to heal; "
                             "set heal.steps: 0")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    batch_iter = iter(batches)
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for step in tqdm(range(config.steps), desc="heal", unit="step", leave=False):
                set_lambda(model, ramp(step, config.ramp_steps))
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, peak=config.lr, warmup_steps=0, total_steps=config.steps,
                                                schedule=config.lr_schedule)
                batch = next(batch_iter, None)
                if batch is None:
                    raise ForgeError(f"compress.heal: heal batches ran out after {step} of heal.steps="
                                     f"{config.steps}; pass an endless iterator (itertools.cycle)")
                loss = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                             labels=batch["labels"]).loss
                loss.backward()
                if config.max_grad_norm > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
    finally:
        swap_bitlinear_for_linear(model)
        model.eval()
    every = max(1, len(losses) // LOG_POINTS)
    return {"steps": config.steps, "modules": len(swapped), "loss_first": losses[0], "loss_last": losses[-1],
            "lr_schedule": config.lr_schedule, "lr_last": optimizer.param_groups[0]["lr"],
            "loss_curve": [[i, losses[i]] for i in range(0, len(losses), every)]}
