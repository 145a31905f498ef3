"""Evaluate the base models on held-out data (the `base` stage and `forge eval`)."""

from __future__ import annotations

from pathlib import Path

import torch

from forgelib.config import BaseConfig
from forgelib.data.tasks import load_tasks
from forgelib.eval.evaluate import evaluate_model
from forgelib.models.hf import load_model


def evaluate_dir(model_dir: str | Path, data_dir: str | Path, *, split: str = "test", limit: int | None = None,
                 batch_size: int = 256, load=load_model) -> dict:
    """Load a model and evaluate it on every task (the `forge eval` JSON).

    ``load(path) -> (model, tokenizer)``: `forge eval` passes one that also reads compressed
    containers; the `base` stage keeps the plain HF loader and so does not depend on that code.
    """
    model, tokenizer = load(model_dir)
    with torch.no_grad():
        return evaluate_model(model, tokenizer, load_tasks(data_dir), split=split, limit=limit, batch_size=batch_size)


def evaluate_base(cfg: BaseConfig, data_dir: str | Path, models_dir: str | Path) -> dict:
    """``metrics/base.json``: every base model's evaluation plus the specialists' families."""
    models_dir = Path(models_dir)
    names = ["ancestor", *cfg.specialists]
    results = {name: evaluate_dir(models_dir / name, data_dir, batch_size=cfg.eval_batch_size) for name in names}
    return {
        "models": results,
        "specialists": {name: spec.family for name, spec in cfg.specialists.items()},
        "ancestor_mean": results["ancestor"]["mean"],
        "own_family": {
            name: {"specialist": results[name]["families"][spec.family], "ancestor": results["ancestor"]["families"][spec.family]}
            for name, spec in cfg.specialists.items()
        },
        # What each specialist kept: its score on every other family as a ratio to the ancestor's,
        # on families where the ancestor scores >= 0.05 (a ratio to ~0 says nothing).
        "other_families_vs_ancestor": {
            name: {family: score / results["ancestor"]["families"][family]
                   for family, score in results[name]["families"].items()
                   if family != spec.family and results["ancestor"]["families"][family] >= 0.05}
            for name, spec in cfg.specialists.items()
        },
    }
