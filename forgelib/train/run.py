"""The `train` stage's entry point: run the Forge loop on the previous phase's model, then
evaluate the result and its input side by side on the held-out test split (under torchrun:
on rank 0, which alone writes; other ranks return an empty dict)."""

from __future__ import annotations

from pathlib import Path

from forgelib.data.tasks import load_tasks
from forgelib.eval.evaluate import evaluate_model
from forgelib.io import write_json
from forgelib.models.card import read_card
from forgelib.models.hf import load_model
from forgelib.train import distributed
from forgelib.train.config import TrainConfig
from forgelib.train.forge_loop import train_model


def run_train(cfg: TrainConfig, *, data_dir: str | Path, input_dir: str | Path, out_dir: str | Path,
              checkpoint_dir: str | Path, metrics_dir: str | Path, metrics_path: str | Path | None = None) -> dict:
    tasks = load_tasks(data_dir)
    model, tokenizer = load_model(input_dir)
    rank, _ = distributed.world()
    input_eval = evaluate_model(model, tokenizer, tasks, split="test") if rank == 0 else None
    card = {
        "name": "forge-trained",
        "description": "The previous phase's model trained with the Forge loop (see params).",
        "parents": [str(input_dir)],
        "data": {"tasks": sorted(tasks)},
        "input_card": read_card(input_dir).get("name"),
    }
    loop = train_model(model, tokenizer, tasks, cfg, out_dir=out_dir, checkpoint_dir=checkpoint_dir,
                       metrics_dir=metrics_dir, card=card)
    if rank != 0:
        return {}  # under torchrun only rank 0 evaluates and writes
    trained_model, trained_tok = load_model(out_dir)
    trained = evaluate_model(trained_model, trained_tok, tasks, split="test")
    metrics = {
        "test_mean": trained["mean"],
        "input_test_mean": input_eval["mean"],
        # First evaluation (of two in a row) with modular validation accuracy >= 0.9; the
        # cadence is loop.eval_every steps on loop.eval_rows_per_task["val"] rows per task.
        "steps_to_modular_0_9": loop["steps_to_modular_0_9"],
        "perplexity": trained["perplexity"],
        "input_perplexity": input_eval["perplexity"],
        "trained": trained,
        "input": input_eval,
        "loop": {k: v for k, v in loop.items() if k not in ("eval_curve", "validation")},
    }
    if metrics_path:
        write_json(metrics_path, metrics)
    return metrics
