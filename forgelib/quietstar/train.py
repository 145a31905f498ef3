"""Quiet-STaR training (Zelikman et al. 2024, arXiv 2403.09629, algorithm 1) at the answer position.

One step, for a batch of (prompt, answer) rows:

1. sample ``n_thoughts`` thoughts per prompt from the model itself (no gradient);
2. one teacher-forced pass over the answers without the thought and one with each thought
   (:meth:`ThinkingModel.forward_answers`), mixed by the mixing head;
3. loss = half the base answer NLL + half the mixed answer NLL (as the reference code weighs
   them) + ``policy_weight`` x REINFORCE on the thought tokens, whose reward is the mixed
   log-likelihood gain of the first ``lookahead`` answer tokens and whose baseline is the mean
   over the prompt's thoughts (:mod:`forgelib.quietstar.objective`).

The optimizer, schedule, gradient clipping and batch order are those of the plain fine-tuning
loop (:func:`forgelib.base.sft.train_sft`), which the sft and pause arms run, so the arms differ
only in what they learn from the same rows. The reference code's 100x gradient on the thought
tokens' embeddings is left out (one learning rate for every parameter).
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
from tqdm.auto import tqdm

from forgelib.data.batching import IGNORE, infinite_batches
from forgelib.quietstar.config import QuietStarConfig
from forgelib.quietstar.decoding import left_pad, right_pad
from forgelib.quietstar.model import ThinkingModel
from forgelib.quietstar.objective import reinforce_advantage, reinforce_loss, thought_reward, token_nll
from forgelib.train.schedule import learning_rate


def split_batch(batch: dict) -> tuple[list[list[int]], list[list[int]]]:
    """A collated right-padded batch back into (``<bos> prompt`` ids, ``answer <eos>`` ids) per row."""
    prompts, answers = [], []
    for ids, labels, mask in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()):
        n = sum(mask)
        first = next(i for i, lab in enumerate(labels) if lab != IGNORE)
        prompts.append(ids[:first])
        answers.append(ids[first:n])
    return prompts, answers


def quietstar_loss(model: ThinkingModel, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                   cfg: QuietStarConfig, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """The step's loss and what to log (see the module doc)."""
    pad, n = model.tokenizer.pad_token_id, cfg.n_thoughts
    p_ids, p_mask = left_pad(prompts, pad)
    a_ids, a_mask = right_pad(answers, pad)
    thoughts = model.sample_thoughts(p_ids.repeat_interleave(n, 0), p_mask.repeat_interleave(n, 0), mode="sample",
                                     temperature=cfg.temperature, generator=generator)
    out = model.forward_answers(p_ids, p_mask, thoughts, a_ids, a_mask)
    rep_ids, rep_mask = a_ids.repeat_interleave(n, 0), a_mask.repeat_interleave(n, 0)
    base_nll = token_nll(out["base_logits"], a_ids, a_mask)  # (B, A)
    mixed_nll = token_nll(out["mixed_logits"], rep_ids, rep_mask)  # (B*n, A)
    logp = model.thought_log_probs(out["policy_logits"], cfg.temperature)
    thought_logprob = logp.gather(-1, thoughts[..., None])[..., 0].sum(dim=1)  # (B*n,)
    reward = thought_reward(base_nll.detach().repeat_interleave(n, 0), mixed_nll.detach(), rep_mask, cfg.lookahead)
    advantage = reinforce_advantage(reward, n)
    nll = 0.5 * base_nll.sum() / a_mask.sum() + 0.5 * mixed_nll.sum() / rep_mask.sum()
    policy = reinforce_loss(advantage, thought_logprob)
    loss = nll + cfg.policy_weight * policy
    stats = {"loss": loss.item(), "nll": nll.item(), "base_nll": (base_nll.sum() / a_mask.sum()).item(),
             "mixed_nll": (mixed_nll.sum() / rep_mask.sum()).item(), "policy_loss": policy.item(),
             "reward": reward.mean().item(), "mix_weight": (out["weight"][..., 0] * rep_mask).sum().item() / rep_mask.sum().item()}
    return loss, stats


def train_thinking(model: ThinkingModel, encoded: Sequence[tuple[list[int], list[int]]], cfg: QuietStarConfig, *,
                   seed: int, log_every: int = 25, desc: str = "quietstar") -> list[dict]:
    """Train ``model`` in place for ``cfg.steps`` steps; returns the logged history (means over ``log_every`` steps)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    params = model.parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.98))
    stream = infinite_batches(encoded, batch_size=cfg.batch_size, pad_id=model.tokenizer.pad_token_id, seed=seed)
    model.train()
    history: list[dict] = []
    running: dict[str, float] = {}
    started = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=desc, leave=False, mininterval=1.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, peak=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps)
        loss, stats = quietstar_loss(model, *split_batch(next(stream)), cfg, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        for key, value in stats.items():
            running[key] = running.get(key, 0.0) + value
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            count = step % log_every + 1
            row = {"step": step + 1, **{k: v / count for k, v in running.items()}, "seconds": time.perf_counter() - started}
            history.append(row)
            running = {}
            bar.set_postfix(loss=f"{row['loss']:.3f}", w=f"{row['mix_weight']:.2f}")
    model.train(False)
    return history


def encode_paused(tokenizer, rows: Sequence[dict], pause_id: int, k: int) -> list[tuple[list[int], list[int]]]:
    """``<bos> prompt <pause>*k answer <eos>`` rows for the pause arm; the loss covers ``answer <eos>``."""
    encoded = []
    for row in rows:
        prompt = tokenizer(row["prompt"])["input_ids"] + [pause_id] * k
        answer = tokenizer(row["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        encoded.append((prompt + answer, [IGNORE] * len(prompt) + answer))
    return encoded
