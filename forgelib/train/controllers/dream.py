"""Dream cycles: offline replay of the hardest real examples, mixed with verified self-samples.

Waking: after every training step the batch's real examples enter a buffer keyed by prompt,
ranked by their per-example answer loss; only the ``buffer_size`` hardest stay.

Dreaming, every ``every`` steps:

1. score the buffer (answer loss, greedy exact match via teacher forcing);
2. self-generation: the model answers ``self_prompts`` fresh train prompts by sampling at the
   temperature curriculum's current temperature (or ``temperature``); each answer is checked by
   the task's own verifier (``TaskGenerator.check``; the row's reference answer for tasks
   without a registered generator) and only verified samples are kept. The kept samples carry
   the model's own answer text, which the verifier accepted, so no wrong answer is ever trained
   on (a STaR-style filter);
3. ``steps`` optimizer steps on batches of ``1 - self_fraction`` buffer examples and
   ``self_fraction`` verified self-samples (buffer examples fill in when too few verified);
4. score the buffer again, log before/after, and refresh the buffer's losses.
"""

from __future__ import annotations

import random

import torch

from forgelib.data.tasks import TASKS
from forgelib.eval.evaluate import score_rows
from forgelib.train.controllers.base import Controller, LoopContext


@torch.no_grad()
def sample_answers(model, tokenizer, prompts: list[str], *, temperature: float, max_new_tokens: int,
                   seed: int) -> list[str]:
    """Sample one answer per prompt; temperature 0 is greedy. Seeded, on a forked torch RNG."""
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    sampling = {"do_sample": False} if temperature == 0 else {
        "do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            enc = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id, **sampling)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [text.strip() for text in tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]


def verified(row: dict, answer: str) -> bool:
    task = TASKS.get(row["task"])
    return task.check(row["prompt"], answer) if task is not None else answer == row["answer"].strip()


class DreamCycles(Controller):
    name = "dreams"

    def __init__(self, *, every: int, steps: int, buffer_size: int, batch_size: int, self_fraction: float,
                 self_prompts: int, temperature: float, max_new_tokens: int, seed: int):
        self.every, self.steps, self.buffer_size, self.batch_size = every, steps, buffer_size, batch_size
        self.self_fraction, self.self_prompts, self.temperature = self_fraction, self_prompts, temperature
        self.max_new_tokens, self.seed = max_new_tokens, seed
        self.buffer: list[dict] = []
        self.cycles: list[dict] = []

    def on_step_end(self, ctx: LoopContext, step: int, rows: list[dict], stats) -> None:
        self.add(rows, stats.example_loss.tolist())
        if (step + 1) % self.every == 0 and self.buffer:
            self.dream(ctx, step)

    def add(self, rows: list[dict], losses: list[float]) -> None:
        merged = {(r["task"], r["prompt"]): r for r in self.buffer}
        for row, loss in zip(rows, losses):
            merged[(row["task"], row["prompt"])] = {**row, "loss": float(loss)}
        ranked = sorted(merged.values(), key=lambda r: (-r["loss"], r["task"], r["prompt"]))
        self.buffer = ranked[: self.buffer_size]

    def dream(self, ctx: LoopContext, step: int) -> None:
        temperature = ctx.controllers["temperature"].temperature if "temperature" in ctx.controllers else self.temperature
        rng = random.Random(f"{self.seed}:dream:{step}")
        before = score_rows(ctx.model, ctx.tokenizer, self.buffer)
        accepted: list[dict] = []
        if self.self_prompts and self.self_fraction > 0:
            levels = ctx.controllers["edge"].levels if "edge" in ctx.controllers else None
            candidates = ctx.stream.sample(step, self.self_prompts, levels, salt="dream")
            answers = sample_answers(ctx.model, ctx.tokenizer, [r["prompt"] for r in candidates],
                                     temperature=temperature, max_new_tokens=self.max_new_tokens,
                                     seed=rng.randrange(2**31))
            accepted = [{**row, "answer": ans} for row, ans in zip(candidates, answers) if verified(row, ans)]
        replay = [{k: v for k, v in r.items() if k != "loss"} for r in self.buffer]
        n_self = min(len(accepted), round(self.self_fraction * self.batch_size))
        for _ in range(self.steps):
            ctx.optimize(rng.choices(replay, k=self.batch_size - n_self) + rng.sample(accepted, n_self))
        after = score_rows(ctx.model, ctx.tokenizer, self.buffer)
        for row, loss in zip(self.buffer, after.example_loss.tolist()):
            row["loss"] = loss
        self.cycles.append({
            "step": step + 1, "buffer_size": len(self.buffer), "temperature": temperature,
            "buffer_loss_before": float(before.example_loss.mean()), "buffer_loss_after": float(after.example_loss.mean()),
            "buffer_acc_before": float(before.correct.float().mean()),
            "buffer_acc_after": float(after.correct.float().mean()),
            "self_sampled": self.self_prompts if self.self_fraction > 0 else 0, "self_accepted": len(accepted),
        })

    def metrics(self) -> dict[str, float]:
        out = {"dream/buffer_size": float(len(self.buffer)), "dream/cycles": float(len(self.cycles))}
        if self.buffer:
            out["dream/buffer_loss"] = sum(r["loss"] for r in self.buffer) / len(self.buffer)
        if self.cycles:
            out.update({f"dream/{k}": float(v) for k, v in self.cycles[-1].items() if k not in ("step", "buffer_size")})
        return out

    def state_dict(self) -> dict:
        return {"buffer": self.buffer, "cycles": self.cycles}

    def load_state_dict(self, state: dict) -> None:
        self.buffer, self.cycles = [dict(r) for r in state["buffer"]], [dict(c) for c in state["cycles"]]
