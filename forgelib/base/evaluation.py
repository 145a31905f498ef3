"""Evaluate the base models on held-out data (the `base` stage)."""

from __future__ import annotations

from pathlib import Path

from forgelib.base.config import BaseConfig
from forgelib.data.tasks import load_tasks
from forgelib.eval.evaluate import evaluate_model
from forgelib.models.hf import load_model


def evaluate_base(cfg: BaseConfig, data_dir: str | Path, models_dir: str | Path) -> dict:
    """``metrics/base.json``: every base model's evaluation plus the specialists' families."""
    models_dir, tasks = Path(models_dir), load_tasks(data_dir)

    def evaluate(name: str) -> dict:
        return evaluate_model(*load_model(models_dir / name), tasks, batch_size=cfg.eval_batch_size)

    results = {name: evaluate(name) for name in ["ancestor", *cfg.specialists]}
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
