"""Is the evomerge winner better than its runners-up, or only luckier? The winner's curse, measured.

The evomerge search scores hundreds of recipes on ``evomerge.fitness_limit`` validation rows per
task (64 in the embedded default) and ships the maximum. The maximum of many noisy scores is
biased upwards, so this script takes the search's ``--top`` best distinct recipes from its cache
(``checkpoints/evomerge/cache.json``), rebuilds each one, and scores it on the **whole**
validation split and on the test split. It reports, per finalist, the search's score, both full
scores, the model's depth, and whether it is the shipped recipe (``models/evolved/recipe.yaml``)
or a parent unchanged (a passthrough of one parent's own layers in order, unscaled); and, over
the finalists, the Spearman rank correlations search -> validation and validation -> test and
the binomial standard error of a validation mean. Nothing here feeds back into the DAG: test is
only reported.

Scores are teacher-forced exact match (``forced_exact_match``, equal to greedy exact match), the
family mean of the headline suite, as the search's fitness.

    python bench/evomerge_finalists.py [--state checkpoints/evomerge] [--top 8]
        [--json-out reports/embedded/amd-epyc/evomerge_finalists.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import yaml


def unchanged_parent(recipe: dict) -> str | None:
    """The parent a passthrough recipe reproduces exactly (its own layers, in order, unscaled), or None."""
    slices = recipe.get("slices")
    if recipe.get("merge_method") != "passthrough" or not slices:
        return None
    sources = [s["sources"][0] for s in slices]
    models = {s["model"] for s in sources}
    if len(models) != 1 or any(s.get("parameters") for s in sources):
        return None
    model = models.pop()
    depth = json.loads((Path(model) / "config.json").read_text())["num_hidden_layers"]
    return model if [s["layer_range"] for s in sources] == [[i, i + 1] for i in range(depth)] else None


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when either side is constant."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else None


def mean_standard_error(result: dict, tasks) -> float:
    """Binomial standard error of a family mean: the families' own errors (independent), averaged."""
    from forgelib.specialize.run import families_of, standard_error

    families = families_of(tasks)
    return math.sqrt(sum(standard_error(result, names) ** 2 for names in families.values())) / len(families)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", default="checkpoints/evomerge", help="the evomerge stage's state dir")
    parser.add_argument("--data", default="data")
    parser.add_argument("--shipped", default="models/evolved/recipe.yaml",
                        help="the shipped recipe, to mark it among the finalists")
    parser.add_argument("--top", type=int, default=8, help="finalists: the search's best distinct recipes")
    parser.add_argument("--merge-seed", type=int, default=0, help="evomerge.merge_seed (dare/della masks)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)

    cache_path = Path(args.state) / "cache.json"
    if not cache_path.is_file():
        return fail(f"--state: {cache_path} does not exist; run the evomerge stage first (dvc repro evomerge)")
    if not (Path(args.data) / "tasks").is_dir():
        return fail(f"--data: {args.data} has no tasks/; run `dvc repro prepare` or pass --data DIR")
    if args.top < 2:
        return fail(f"--top: expected an int >= 2 (finalists to compare), got {args.top}")

    from forgelib.data.tasks import load_tasks
    from forgelib.eval.evaluate import fast_mean_exact_match
    from forgelib.io import write_json
    from forgelib.merge.engine import merge_recipe
    from forgelib.models.hf import load_model

    cache = json.loads(cache_path.read_text())
    ranked = sorted(cache.items(), key=lambda item: -item[1]["fitness"])[: args.top]  # stable: scored order
    shipped = yaml.safe_load(Path(args.shipped).read_text()) if Path(args.shipped).is_file() else None
    tasks = load_tasks(args.data)
    rows = []
    for key, entry in ranked:
        recipe = entry["recipe"]
        with tempfile.TemporaryDirectory(prefix="finalist-") as tmp:
            model_dir = merge_recipe(recipe, Path(tmp) / "model", seed=args.merge_seed)
            model, tokenizer = load_model(model_dir)
            validation = fast_mean_exact_match(model, tokenizer, tasks, split="validation")
            test = fast_mean_exact_match(model, tokenizer, tasks, split="test")
        rows.append({
            "key": key, "method": recipe["merge_method"], "layers": model.config.num_hidden_layers,
            "search_fitness": entry["fitness"], "validation": validation["mean"], "test": test["mean"],
            "validation_se": mean_standard_error(validation, tasks),
            "shipped": recipe == shipped, "unchanged_parent": unchanged_parent(recipe),
        })
        print(f"{key} {rows[-1]['method']:<12} layers {rows[-1]['layers']}  search {entry['fitness']:.4f}  "
              f"validation {validation['mean']:.4f}  test {test['mean']:.4f}"
              f"{'  (shipped)' if rows[-1]['shipped'] else ''}"
              f"{'  (= ' + rows[-1]['unchanged_parent'] + ')' if rows[-1]['unchanged_parent'] else ''}", flush=True)
    by_validation = sorted(rows, key=lambda r: -r["validation"])
    summary = {
        "finalists": rows,
        "spearman_search_to_validation": spearman([r["search_fitness"] for r in rows], [r["validation"] for r in rows]),
        "spearman_validation_to_test": spearman([r["validation"] for r in rows], [r["test"] for r in rows]),
        "validation_spread": max(r["validation"] for r in rows) - min(r["validation"] for r in rows),
        "validation_se_median": sorted(r["validation_se"] for r in rows)[len(rows) // 2],
        "best_on_validation": by_validation[0]["key"],
        "shipped_rank_on_validation": next((rank for rank, r in enumerate(by_validation, 1) if r["shipped"]), None),
    }
    print(f"Spearman search -> validation {summary['spearman_search_to_validation']}, validation -> test "
          f"{summary['spearman_validation_to_test']}; validation spread {summary['validation_spread']:.4f} "
          f"against a standard error of {summary['validation_se_median']:.4f}")
    if args.json_out:
        write_json(args.json_out, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
