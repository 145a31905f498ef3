"""The arms of the Quiet-STaR experiment (issue 12), each trained from the same input model for the
same steps on the same batches of the serial task, and evaluated on its held-out split:

- ``sft``: plain fine-tuning (:func:`forgelib.base.sft.train_sft`);
- ``pause``: the same loop on ``prompt <|pause|>*k answer``, k = the positions a thought takes
  (start and end markers included): extra compute before the answer, without thinking (Goyal
  et al. 2024, "Think before you speak"; the pause token is new, initialised like the thought
  markers, and never predicted as an answer token);
- ``thoughts``: Quiet-STaR (:func:`forgelib.quietstar.train.train_thinking`), evaluated thinking;
- ``random_thoughts``: the thoughts arm's model with each thought replaced by random tokens at
  evaluation: if the model uses what it thinks, this falls back.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Mapping, Sequence

import torch

from forgelib.base.sft import SFTSettings, train_sft
from forgelib.data.batching import encode_rows
from forgelib.data.config import PrepareConfig
from forgelib.data.prepare import build_splits
from forgelib.errors import ForgeError
from forgelib.eval.evaluate import evaluate_answers
from forgelib.models.hf import load_model
from forgelib.quietstar.config import QuietStarConfig
from forgelib.quietstar.decoding import decode_answers, greedy_continue, last_hidden, left_pad
from forgelib.quietstar.model import ThinkingModel, add_special_token
from forgelib.quietstar.train import encode_paused, train_thinking

PAUSE = "<|pause|>"


def serial_suite(cfg: QuietStarConfig) -> dict:
    """``{task: DatasetDict(train/validation/test)}`` of the serial task, built like ``prepare`` builds a task."""
    prepare = PrepareConfig(seed=cfg.data_seed, tasks=(cfg.task,), levels={cfg.task: cfg.level},
                            n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test)
    return {cfg.task: build_splits(cfg.task, prepare)}


def training_rows(cfg: QuietStarConfig, suite: Mapping, headline: Mapping) -> list[dict]:
    """The serial task's train rows, then ``cfg.replay_rows`` headline train rows (seeded, evenly
    over the headline tasks); batches shuffle them together. Every arm trains on this list."""
    serial = list(suite[cfg.task]["train"])
    wanted, names = cfg.replay_rows(len(serial)), sorted(headline)
    rng = random.Random(f"quietstar-replay:{cfg.data_seed}")
    replay = []
    for i, name in enumerate(names):
        rows = headline[name]["train"]
        share = wanted // len(names) + (i < wanted % len(names))
        replay += [rows[j] for j in rng.sample(range(len(rows)), min(share, len(rows)))]
    return serial + replay


def check_fits(lm, suites: Mapping, cfg: QuietStarConfig, where: str | Path) -> None:
    """``<bos> prompt thought answer <eos>`` of every row must fit the model's positions."""
    limit = getattr(lm.config, "max_position_embeddings", None)
    if limit is None:
        return
    for name, splits in suites.items():
        longest = max(len(r["prompt"]) + len(r["answer"]) for split in splits.values() for r in split)
        need = longest + 2 + cfg.thought_tokens + 2
        if need > limit:
            raise ForgeError(f"{where}: task {name} with quietstar.thought_tokens {cfg.thought_tokens} needs {need} "
                             f"positions, the model has {limit}; lower quietstar.level or quietstar.thought_tokens")


def sft_settings(cfg: QuietStarConfig, seed: int) -> SFTSettings:
    return SFTSettings(steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size, warmup_steps=cfg.warmup_steps, seed=seed)


def train_sft_arm(input_dir: str | Path, train_rows: Sequence[dict], cfg: QuietStarConfig, seed: int):
    """(model, tokenizer, history): plain fine-tuning."""
    lm, tokenizer = load_model(input_dir)
    history = train_sft(lm, encode_rows(tokenizer, train_rows), sft_settings(cfg, seed), pad_id=tokenizer.pad_token_id,
                        desc=f"sft seed {seed}")
    return lm, tokenizer, history


def train_pause_arm(input_dir: str | Path, train_rows: Sequence[dict], cfg: QuietStarConfig, seed: int):
    """(model, tokenizer, pause id, history): fine-tuning with ``cfg.pause_tokens()`` fillers before the answer."""
    lm, tokenizer = load_model(input_dir)
    (pause_id,) = add_special_token(lm, tokenizer, [PAUSE])
    encoded = encode_paused(tokenizer, train_rows, pause_id, cfg.pause_tokens())
    history = train_sft(lm, encoded, sft_settings(cfg, seed), pad_id=tokenizer.pad_token_id, desc=f"pause seed {seed}")
    return lm, tokenizer, pause_id, history


@torch.no_grad()
def pause_answers(lm, tokenizer, pause_id: int, k: int, prompts: Sequence[str], *, max_new_tokens: int,
                  batch_size: int = 256) -> list[str]:
    """Greedy answers after ``k`` pause tokens; the pause token is never emitted."""
    lm.eval()
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad([tokenizer(p)["input_ids"] + [pause_id] * k for p in prompts[start : start + batch_size]],
                             tokenizer.pad_token_id)

        def next_logits(generated):
            h = last_hidden(lm, torch.cat([ids, generated], 1), torch.cat([mask, torch.ones_like(generated)], 1))[:, -1]
            logits = lm.get_output_embeddings()(h)
            logits[:, pause_id] = float("-inf")
            return logits

        tokens = greedy_continue(next_logits, len(ids), max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_token_id,
                                 pad_id=tokenizer.pad_token_id)
        out += decode_answers(tokenizer, tokens)
    return out


def evaluate_pause(lm, tokenizer, pause_id: int, k: int, tasks: Mapping, *, split: str = "test", batch_size: int = 256) -> dict:
    return evaluate_answers(lambda prompts, budget: pause_answers(lm, tokenizer, pause_id, k, prompts, max_new_tokens=budget,
                                                                  batch_size=batch_size), tasks, split=split)


def train_thoughts_arm(input_dir: str | Path, train_rows: Sequence[dict], cfg: QuietStarConfig, seed: int):
    """(thinking model, history): Quiet-STaR from the input model."""
    lm, tokenizer = load_model(input_dir)
    model = ThinkingModel.from_base(lm, tokenizer, thought_tokens=cfg.thought_tokens, seed=seed)
    history = train_thinking(model, encode_rows(tokenizer, train_rows), cfg, seed=seed, desc=f"thoughts seed {seed}")
    return model, history


def evaluate_thinking(model: ThinkingModel, tasks: Mapping, *, split: str = "test", thoughts: str = "greedy",
                      seed: int = 0, batch_size: int = 256) -> dict:
    """Exact match of the thinking answers; ``thoughts="random"`` is the random_thoughts control."""
    return evaluate_answers(lambda prompts, budget: model.answers(prompts, max_new_tokens=budget, batch_size=batch_size,
                                                                  thoughts=thoughts, seed=seed), tasks, split=split)
