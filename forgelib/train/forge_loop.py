"""The Forge training loop: plain PyTorch, with switchable controllers at named hooks.

One step, top to bottom (see :mod:`forgelib.train.controllers.base` for the hook contract):

    lam     <- warmup_lambda(step)              (train.bitnet only: quantization blend)
    plan    <- on_batch hooks                   (curriculum levels, temperature)
    rows    <- stream.sample(step, plan)        (a pure function of seed, step and levels)
    loss    <- answer loss + aux_loss hooks     (self-model head)
    backward; after_backward hooks              (Grokfast filters)
    clip; optimizer.step()
    on_step_end hooks                           (curriculum bookkeeping, probes, dream phases)
    every eval_every steps: evaluate, on_eval hooks   (λ schedule, grokking stage)
    every log_every steps: dvclive (+ W&B)
    every checkpoint_every steps: checkpoint into the persist directory

Determinism: every random choice is derived from ``(seed, step)`` and the RNG states are
checkpointed, so with the same params, thread count and hardware a killed run that is resumed
ends with the same weights as an uninterrupted one. Whether the checkpoint directory is resumed
(same params, input model and data) or cleared is decided by :class:`forgelib.resume.StateDir`.

With ``train.bitnet.enabled`` the attention and MLP layers train through BitNet b1.58
quantization (:mod:`forgelib.train.bitnet_qat`): checkpoints hold the latent full-precision
weights, the saved model the ternarized ones, and the final validation scores the saved model.

With ``train.distributed.nproc: N > 1`` (run under torchrun, :mod:`forgelib.train.distributed`)
every rank samples the same global batch and trains on ``rows[rank::N]``; the answer loss is
normalised by the global answer-token count and the gradients are summed across ranks before
the ``after_backward`` hooks, so the update equals the 1-process one up to float summation
order. Per-example statistics are gathered back into global batch order before the
``on_step_end`` hooks, so the edge curriculum sees the whole batch on every rank and stays
rank-consistent; geometry probes and the self-model head (its own seeded init) are
deterministic given the synchronised weights; rank 0 evaluates and broadcasts the result to
every rank's ``on_eval`` hooks (λ schedule, grokking stage). Dream cycles are switched off with
a warning (their replay batches are not sharded). Only rank 0 writes checkpoints, telemetry and
the model; every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from forgelib.configtools import to_dict
from forgelib.errors import ForgeError
from forgelib.eval.evaluate import evaluate_model, score_rows
from forgelib.eval.scoring import AnswerScores, accuracy_by_task, family_mean, family_scores, score_answers
from forgelib.resume import StateDir
from forgelib.train import bitnet_qat
from forgelib.train import checkpoint as ckpt
from forgelib.train import distributed
from forgelib.train.config import TrainConfig
from forgelib.train.controllers.base import BatchPlan, Controller, LoopContext
from forgelib.train.controllers.registry import BuildEnv, build_controllers
from forgelib.train.grokfast import GrokfastAdamW
from forgelib.train.schedule import learning_rate
from forgelib.train.task_stream import ROW_KEYS, TaskStream
from forgelib.train.telemetry import Telemetry

CADENCE_KEYS = ("log_every", "checkpoint_every", "keep_checkpoints", "wandb")
"""Config keys that do not change the trajectory: a run may resume across changes to them."""


def make_optimizer(cfg: TrainConfig, model, controllers: list[Controller]) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if cfg.decay_norms:
        groups = [{"params": trainable, "name": "model"}]
    else:  # vectors (the RMSNorm gains) without weight decay, as in the Grokfast paper's code
        groups = [{"params": [p for p in trainable if p.dim() >= 2], "name": "model"},
                  {"params": [p for p in trainable if p.dim() < 2], "name": "model", "weight_decay": 0.0}]
    extra = [p for c in controllers for p in c.parameters()]
    if extra:
        groups.append({"params": extra, "name": "auxiliary"})
    kwargs = {"lr": cfg.lr, "betas": tuple(cfg.betas), "weight_decay": cfg.weight_decay}
    if cfg.grokfast.enabled and cfg.grokfast.filter == "ema_fused":
        # λ's owner is the Grokfast controller; it refreshes the model group's copy before every step.
        lamb = next(c for c in controllers if c.name == "grokfast").lamb
        optimizer = GrokfastAdamW(groups, alpha=cfg.grokfast.alpha, lamb=lamb, **kwargs)
        for group in optimizer.param_groups:
            if group["name"] != "model":
                group["lamb"] = 0.0  # the self-model head is not part of the model Grokfast filters
        return optimizer
    return torch.optim.AdamW(groups, **kwargs)


def run_identity(cfg: TrainConfig, model, tasks: Mapping) -> dict[str, Any]:
    """Everything that determines the trajectory: params (cadence keys aside) and a hash of the
    input weights and training data. A checkpoint directory with another identity is not resumed."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    for name in sorted(tasks):
        digest.update(name.encode())
        train = tasks[name]["train"][:]
        for prompt, answer, level in zip(train["prompt"], train["answer"], train["level"]):
            digest.update(f"{prompt}\t{answer}\t{level}\n".encode())
    trajectory = {k: v for k, v in to_dict(cfg).items() if k not in CADENCE_KEYS}
    return {"train": trajectory, "inputs": {"model_and_train_data": digest.hexdigest()}}


def optimize(ctx: LoopContext, controllers: list[Controller], rows: list[dict], grad_clip: float) -> tuple[AnswerScores, float]:
    """One optimizer step on ``rows``; used by the loop and by dream phases.

    Under N processes ``rows`` is the global batch: this rank trains on ``rows[rank::N]`` and the
    returned scores cover the whole batch, in its order, on every rank."""
    rank, world_size = distributed.world()
    device = next(ctx.model.parameters()).device
    batch = {k: v.to(device) for k, v in ctx.stream.collate(distributed.shard(rows, rank, world_size)).items()}
    wants_hidden = any(c.wants_hidden_states for c in controllers)
    outputs = forward_by_length(ctx.model, batch, ctx.length_groups, output_hidden_states=wants_hidden)
    stats = score_answers(outputs.logits, batch["labels"])
    loss = stats.loss
    if world_size > 1:
        # This rank's share of the global per-token mean: sum(local NLL) / global answer tokens.
        # Summed over ranks (sum_grads below) it is the 1-process loss and gradient; the mean of
        # per-rank means would weigh a rank with short answers too much.
        local_tokens = stats.n_tokens.sum()
        loss = loss * local_tokens / distributed.global_count(local_tokens).clamp(min=1)
    for c in controllers:
        extra = c.aux_loss(ctx, batch, outputs)
        if extra is not None:
            loss = loss + extra / world_size  # summed over ranks: the mean of the ranks' aux losses
    ctx.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in ctx.optimizer.param_groups for p in group["params"]]
    distributed.sum_grads(params)  # before the hooks: Grokfast filters the synchronised gradient
    for c in controllers:
        c.after_backward(ctx, ctx.step)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    ctx.optimizer.step()
    if world_size > 1:
        stats = gather_scores(stats, world_size)
    return stats, float(grad_norm)


def forward_by_length(model, batch: dict, groups: int, *, output_hidden_states: bool = False):
    """The model's outputs on a right-padded ``batch``, computed in ``groups`` forward passes.

    The rows are sorted by length and cut into ``groups`` groups of (nearly) equal size; each
    group is trimmed to its own longest row, so short rows (a 9-token ``x*y%97=z``) stop paying
    for the batch's longest (a 27-token parity row). The logits (and hidden states) are padded
    back to the batch's width with zeros at the trimmed positions, which are padding (labels
    ignored, attention mask 0), and put back in the batch's row order, so every loss computed
    from them, and its gradient, is the one-pass value up to float rounding. Right padding and
    causal attention make the trim exact: no real token attends to a position after it.
    ``groups <= 1`` is the plain single forward.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if groups <= 1 or len(ids) < 2:
        return model(input_ids=ids, attention_mask=mask, output_hidden_states=output_hidden_states)
    lengths = mask.sum(dim=1)
    order = torch.argsort(lengths, stable=True)
    width = ids.shape[1]
    logits, hidden = [], []
    for rows in torch.tensor_split(order, min(groups, len(order))):
        t = int(lengths[rows].max())
        out = model(input_ids=ids[rows, :t], attention_mask=mask[rows, :t], output_hidden_states=output_hidden_states)
        logits.append(F.pad(out.logits, (0, 0, 0, width - t)))
        if output_hidden_states:
            hidden.append([F.pad(h, (0, 0, 0, width - t)) for h in out.hidden_states])
    back = torch.argsort(order)
    states = tuple(torch.cat(layer)[back] for layer in zip(*hidden)) if output_hidden_states else None
    return SimpleNamespace(logits=torch.cat(logits)[back], hidden_states=states)


def gather_scores(local: AnswerScores, world_size: int) -> AnswerScores:
    """Every rank's per-example scores, in global batch order (shards of equal size); ``loss``
    becomes the detached global per-token mean, the value a 1-process run logs."""
    nll = distributed.gather_rows(local.nll, world_size)
    n_tokens = distributed.gather_rows(local.n_tokens, world_size)
    correct = distributed.gather_rows(local.correct.to(torch.uint8), world_size).bool()  # gloo: no bool
    return AnswerScores(nll.sum() / n_tokens.sum().clamp(min=1), nll, n_tokens, correct)


def evaluate_in_loop(model, tokenizer, eval_sets: Mapping[str, list[dict]]) -> dict[str, Any]:
    """Teacher-forced greedy exact match (see forgelib.eval.scoring) on fixed train and validation subsets."""
    out: dict[str, Any] = {}
    for split, rows in eval_sets.items():
        scores = score_rows(model, tokenizer, rows)
        per_task = accuracy_by_task([r["task"] for r in rows], scores.correct.tolist())
        families = family_scores(per_task, {r["task"]: r["family"] for r in rows})
        out[f"{split}_acc"] = family_mean(families)
        out[f"{split}_loss"] = float(scores.example_loss.mean())
        out[f"{split}_families"] = families
    return out


def log_record(done: int, optimizer, window: Mapping[str, list[float]], evaluation: Mapping[str, Any] | None,
               controllers: list[Controller]) -> dict[str, Any]:
    """One history/telemetry record: window means, the evaluation if one just ran, controller metrics."""
    record: dict[str, Any] = {"step": done, "lr": optimizer.param_groups[0]["lr"]}
    record.update({k: sum(v) / len(v) for k, v in window.items() if v})
    if evaluation is not None:
        record.update({f"eval/{k}": v for k, v in evaluation.items() if not isinstance(v, dict)})
        record.update({f"eval/val_family/{f}": v for f, v in evaluation["val_families"].items()})
        record.update({f"eval/train_family/{f}": v for f, v in evaluation["train_families"].items()})
    for c in controllers:
        record.update(c.metrics())
        if c.name == "geometry" and c.stage is not None:
            record["geometry/stage_name"] = c.stage  # kept in the history for analysis; not a metric
    return record


def steps_to_threshold(history: list[Mapping[str, Any]], family: str, threshold: float) -> int | None:
    """The first evaluated step at which ``family``'s validation accuracy is >= ``threshold`` at it
    and at the next evaluation (one lucky evaluation is not grokking); None if that never happens."""
    curve = [(r["step"], r[f"eval/val_family/{family}"]) for r in history if f"eval/val_family/{family}" in r]
    for (step, acc), (_, following) in zip(curve, curve[1:]):
        if acc >= threshold and following >= threshold:
            return step
    return None


def eval_subsets(tasks: Mapping, limit: int) -> dict[str, list[dict]]:
    sets = {}
    for split, key in (("train", "train"), ("val", "validation")):
        sets[split] = [{k: r[k] for k in ROW_KEYS} for _, splits in sorted(tasks.items())
                       for r in splits[key].select(range(min(limit, len(splits[key]))))]
    return sets


def _answer_budget(stream: TaskStream, tokenizer) -> int:
    answers = sorted({r["answer"] for rows in stream.train.values() for r in rows})
    longest = max(len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"])
    return longest + 1  # + <eos>


def train_model(model, tokenizer, tasks: Mapping, config: TrainConfig, *, out_dir: str | Path,
                checkpoint_dir: str | Path, metrics_dir: str | Path, card: Mapping[str, Any] | None = None) -> dict:
    """Train ``model`` on ``tasks`` with the enabled controllers; save it to ``out_dir``.

    ``card`` is deep-merged over the loop's own model card (params, validation metrics). Resumes
    from the newest matching checkpoint in ``checkpoint_dir``. Returns the final metrics (in-loop
    evaluation, official greedy evaluation on the validation split, controller state).
    """
    from forgelib.models.hf import save_model

    rank, world_size = distributed.world()
    if world_size != config.distributed.nproc:
        print(f"forge train: running in {world_size} process(es), train.distributed.nproc is "
              f"{config.distributed.nproc}", file=sys.stderr)
    if config.batch_size % world_size:
        raise ForgeError(f"train.batch_size ({config.batch_size}) must be a multiple of the {world_size} processes "
                         "(set train.distributed.nproc to the world size)")
    if world_size > 1 and config.dreams.enabled:
        print("forge train: WARNING: dream cycles are off under more than one process "
              "(train.distributed.nproc > 1)", file=sys.stderr)
        config = dataclasses.replace(config, dreams=dataclasses.replace(config.dreams, enabled=False))
    torch.manual_seed(config.seed)
    identity = run_identity(config, model, tasks)
    quantized = bitnet_qat.attach(model, config.bitnet) if config.bitnet.enabled else []
    stream = TaskStream(tasks, tokenizer, seed=config.seed, source=config.effective_source(),
                        weights=config.task_weights)
    env = BuildEnv(model=model, tasks=tasks, stream=stream, max_new_tokens=_answer_budget(stream, tokenizer))
    controllers = build_controllers(config, env)
    optimizer = make_optimizer(config, model, controllers)
    ctx = LoopContext(model=model, tokenizer=tokenizer, stream=stream, optimizer=optimizer, seed=config.seed,
                      max_steps=config.max_steps, controllers={c.name: c for c in controllers},
                      length_groups=config.length_groups)
    ctx.optimize = lambda rows: optimize(ctx, controllers, rows, config.grad_clip)[0]
    eval_sets = eval_subsets(tasks, config.eval_limit)

    start_step, history, last_eval = 0, [], {}
    # Rank 0 decides whether the directory is resumed (and clears it if not); then all ranks load.
    resumable = distributed.broadcast(StateDir(checkpoint_dir, identity).open() if rank == 0 else None)
    distributed.barrier()
    latest = ckpt.latest_checkpoint(checkpoint_dir) if resumable else None
    if latest is not None:
        state = ckpt.load_checkpoint(latest, model=model, optimizer=optimizer, controllers=ctx.controllers)
        start_step, history, last_eval = state["step"], state["history"], state["last_eval"]
        if rank == 0:
            print(f"resuming from {latest} (step {start_step})", file=sys.stderr)

    telemetry = None
    if rank == 0:
        telemetry = Telemetry(metrics_dir, config=to_dict(config), wandb_project=config.wandb.project,
                              wandb_mode=config.wandb.mode)
        for record in history:
            telemetry.log(record["step"], record)

    model.train()
    window: dict[str, list[float]] = {"loss": [], "batch_acc": [], "grad_norm": [], "step_time_ms": []}
    run_started = time.perf_counter()
    bar = tqdm(range(start_step, config.max_steps), initial=start_step, total=config.max_steps, desc="forge train",
               leave=False, mininterval=1.0, disable=rank != 0)
    for step in bar:
        started = time.perf_counter()
        ctx.step = step
        if quantized:
            lam = bitnet_qat.set_warmup_lambda(model, step, config.bitnet.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, peak=config.lr, warmup_steps=config.warmup_steps,
                                        total_steps=config.max_steps, schedule=config.lr_schedule)
        plan = BatchPlan()
        for c in controllers:
            c.on_batch(ctx, step, plan)
        rows = stream.sample(step, config.batch_size, plan.levels)
        stats, grad_norm = optimize(ctx, controllers, rows, config.grad_clip)
        for c in controllers:
            c.on_step_end(ctx, step, rows, stats)
        window["loss"].append(float(stats.loss.detach()))
        window["batch_acc"].append(float(stats.correct.float().mean()))
        window["grad_norm"].append(grad_norm)
        window["step_time_ms"].append(1000 * (time.perf_counter() - started))
        done = step + 1

        evaluated = done % config.eval_every == 0 or done == config.max_steps
        if evaluated:
            # Rank 0 evaluates; the others wait in the broadcast and take the same decisions.
            last_eval = distributed.broadcast(evaluate_in_loop(model, tokenizer, eval_sets) if rank == 0 else None)
            for c in controllers:
                c.on_eval(ctx, step, last_eval)
        if evaluated or done % config.log_every == 0:
            record = log_record(done, optimizer, window, last_eval if evaluated else None, controllers)
            if quantized:
                record["bitnet/lambda"] = lam
            history.append(record)
            if telemetry is not None:
                telemetry.log(done, record)
            window = {k: [] for k in window}
            bar.set_postfix(loss=f"{record['loss']:.3f}")
        if rank == 0 and config.checkpoint_every and (done % config.checkpoint_every == 0 or done == config.max_steps):
            ckpt.save_checkpoint(checkpoint_dir, step=done, model=model, optimizer=optimizer,
                                 controllers=ctx.controllers, keep=config.keep_checkpoints,
                                 trainer_state={"config": to_dict(config),
                                                "history": history, "last_eval": last_eval})
    seconds = time.perf_counter() - run_started
    if rank != 0:
        distributed.barrier()  # rank 0 evaluates and saves the model
        return {}
    telemetry.close()

    if quantized:
        bitnet_qat.ternarize_(model)
    model.eval()
    validation = evaluate_model(model, tokenizer, dict(tasks), split="validation", limit=config.eval_limit)
    step_times = [r["step_time_ms"] for r in history if "step_time_ms" in r]
    metrics = {
        "steps": config.max_steps,
        "resumed_from": start_step,
        "final_loss": history[-1]["loss"] if history and "loss" in history[-1] else None,
        "train_acc": last_eval.get("train_acc"),
        "val_acc": last_eval.get("val_acc"),
        "val_families": last_eval.get("val_families", {}),
        "eval_curve": [[r["step"], r["eval/val_acc"]] for r in history if "eval/val_acc" in r],
        "validation": validation,
        "controllers": {c.name: c.metrics() for c in controllers},
        "steps_to_modular_0_9": steps_to_threshold(history, "modular", 0.9),
        "eval_every": config.eval_every,
        "eval_rows_per_task": {split: len(rows) // max(1, len(tasks)) for split, rows in eval_sets.items()},
        "step_time_ms": sum(step_times) / len(step_times) if step_times else None,
        "seconds_this_run": seconds,
    }
    if quantized:
        metrics["bitnet"] = {"quantized_modules": len(quantized), "warmup_steps": config.bitnet.warmup_steps}
    save_model(model, tokenizer, out_dir, {
        "name": "forge-trained",
        "description": "Trained by the Forge loop (forgelib.train.forge_loop) with the controllers listed in params.",
        "params": {"train": to_dict(config)},
        "metrics": {"validation": validation},
    }, card)
    distributed.barrier()
    return metrics
