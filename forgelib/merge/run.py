"""The `evomerge` stage's entry point: search, rebuild the best recipe, evaluate on test.

Fitness is the mean exact match over **all** task families on the validation split, evaluated
for real on every candidate model (``forced_exact_match``: one teacher-forced pass that equals
greedy exact match). The test split is touched only once the search is over: the evolved model,
every parent and the uniform task-arithmetic merge are evaluated on it with real generation.

The uniform task-arithmetic baseline is ``W = W_base + sum_i (1/N) delta_i`` (weights 1/N,
lambda 1), the same untuned recipe the search starts from in generation 0.

What a merge is measured against (all on the test split):

- the **ancestor** (the merge's base model: a merge that reproduces it has combined nothing);
- the **best single model**: the best test mean of the ancestor and every specialist;
- the **oracle**: per family, the best score any of those models reaches, averaged over
  families. It is what routing each family to its best parent would score, so
  ``evolved_to_oracle`` = 1.0 means the merge is as good as the best parent on every family.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from forgelib.data.tasks import load_tasks
from forgelib.eval.evaluate import evaluate_model
from forgelib.io import write_json
from forgelib.merge.config import EvoMergeConfig
from forgelib.merge.engine import merge_recipe
from forgelib.merge.evolve import evolve
from forgelib.merge.fitness import ValidationFitness
from forgelib.merge.genome import uniform_recipe
from forgelib.models.hf import load_model
from forgelib.resume import fingerprint_files
from forgelib.telemetry import live_logger


def run_evomerge(
    cfg: EvoMergeConfig,
    *,
    data_dir: str | Path,
    base_model: str,
    parents: dict[str, str],
    out_dir: str | Path,
    state_dir: str | Path,
    metrics_path: str | Path,
    plots_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Evolve a merge of ``parents`` (name -> dir) around ``base_model``; write model + metrics."""
    started = time.perf_counter()
    tasks = load_tasks(data_dir)
    inputs = {  # the fitness cache is only valid for the same parent weights and validation data
        "models": fingerprint_files([base_model, *parents.values()]),
        "validation": fingerprint_files(sorted(Path(data_dir, "tasks").glob("*/validation"))),
        "fitness_limit": cfg.fitness_limit,
    }

    # A spec, not a closure: the process and ray backends ship it to their workers.
    fitness = ValidationFitness(str(data_dir), cfg.fitness_limit)
    result = evolve(list(parents.values()), base_model, fitness, config=cfg, state_dir=state_dir,
                    progress=progress, inputs=inputs)
    # Logged from the full history (not live) so a resumed search still plots every generation.
    with live_logger(plots_dir) as log:
        for generation, row in enumerate(result.history):
            log(generation, row)

    merge_recipe(result.best_recipe, out_dir, seed=cfg.merge_seed, recipe_text=yaml.safe_dump(result.best_recipe, sort_keys=False))
    uniform_dir = merge_recipe(uniform_recipe("task_arithmetic", list(parents.values()), base_model, dtype=cfg.dtype),
                              Path(state_dir) / "uniform_task_arithmetic")

    def test_eval(model_dir) -> dict:
        model, tokenizer = load_model(model_dir)
        return evaluate_model(model, tokenizer, tasks, split="test")

    evolved = test_eval(out_dir)
    ancestor = test_eval(base_model)
    parent_results = {name: test_eval(path) for name, path in parents.items()}
    uniform = test_eval(uniform_dir)
    best_parent = max(parent_results, key=lambda n: parent_results[n]["mean"])
    singles = {"ancestor": ancestor} | parent_results
    best_single = max(singles, key=lambda n: singles[n]["mean"])
    oracle_families = {family: max(r["families"][family] for r in singles.values()) for family in ancestor["families"]}
    oracle = sum(oracle_families.values()) / len(oracle_families)
    metrics = {
        "evolved_test_mean": evolved["mean"],
        "best_parent_test_mean": parent_results[best_parent]["mean"],
        "uniform_task_arithmetic_test_mean": uniform["mean"],
        "best_parent": best_parent,
        "ratio_to_best_parent": evolved["mean"] / parent_results[best_parent]["mean"] if parent_results[best_parent]["mean"] else None,
        "parents_test_mean": {name: r["mean"] for name, r in parent_results.items()},
        # The merge's base model itself: a merge that only reproduces it has combined nothing.
        "ancestor_test_mean": ancestor["mean"],
        "ratio_to_ancestor": evolved["mean"] / ancestor["mean"] if ancestor["mean"] else None,
        "best_single_model": best_single,
        "best_single_model_test_mean": singles[best_single]["mean"],
        "ratio_to_best_single_model": evolved["mean"] / singles[best_single]["mean"] if singles[best_single]["mean"] else None,
        "oracle_test_mean": oracle,
        "oracle_families": oracle_families,
        "evolved_to_oracle": evolved["mean"] / oracle if oracle else None,
        "evolved": evolved,
        "uniform_task_arithmetic": uniform,
        "best_validation_fitness": result.best_fitness,
        "best_method": result.best_recipe["merge_method"],
        "generations": result.history,
        "evaluations": result.evaluations,
        "evaluations_this_run": result.evaluations_this_run,
        "seconds": time.perf_counter() - started,
    }
    write_json(metrics_path, metrics)
    return metrics
