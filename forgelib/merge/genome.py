"""Merge genomes: a method plus its recipe genes, and the GA operators that vary them.

A genome is JSON: ``{"method": "ties", "genes": {"weight": [...], "density": [...],
"lambda": [...]}}``. It never holds weights: :func:`to_recipe` turns it into a mergekit recipe and
the engine re-applies that recipe to the parents. Gene layouts:

- ``per_layer`` genes (``weight``, ``density``) hold ``n_models * layer_groups`` values: model
  ``m`` gets ``values[m*G:(m+1)*G]``, a scalar when ``G = 1`` and otherwise a mergekit gradient
  (anchors interpolated linearly over the layers).
- ``per_model`` genes (``gamma``, ``epsilon``) hold one value per model; ``global`` genes
  (``lambda``) hold one value.
- ``dfs`` genomes hold ``include`` (0/1 per slot of the paper's layer sequence) and ``scale``
  (one positive factor per slot), see ``dfs.py``.

Bounds keep every candidate valid: DELLA's ``density +/- epsilon`` stays inside (0, 1) and the
soup weights stay positive, so ``normalize`` never divides by zero.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from forgelib.errors import ForgeError
from forgelib.merge.dfs import candidate_slots, dfs_recipe

SPARSE = ("ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della",
          "della_linear")
TASK_VECTOR = ("task_arithmetic",) + SPARSE


@dataclass(frozen=True)
class Gene:
    name: str
    low: float
    high: float
    layout: Literal["per_layer", "per_model", "global"]
    uniform: float  # the value of the uniform (untuned) recipe


@dataclass(frozen=True)
class SearchSpace:
    """What genomes are decoded against: the parents (as written in recipes) and the layout."""

    parents: tuple[str, ...]
    base: str | None
    n_layers: int
    layer_groups: int
    dfs_repeats: int
    dtype: str

    def genes(self, method: str) -> tuple[Gene, ...]:
        n = len(self.parents)
        if method in ("linear", "multislerp"):
            return (Gene("weight", 0.05, 1.0, "per_layer", 1.0 / n),)
        if method == "model_stock":
            return ()
        if method not in TASK_VECTOR:
            raise ForgeError(f"evomerge: no genome for method {method!r}")
        genes = [Gene("weight", 0.0, 1.0, "per_layer", 1.0 / n),
                 Gene("lambda", 0.5, 1.5, "global", 1.0)]
        if method.startswith("della"):
            genes += [Gene("density", 0.2, 0.8, "per_layer", 0.5),
                      Gene("epsilon", 0.01, 0.15, "per_model", 0.1)]
        elif method in SPARSE:
            genes.append(Gene("density", 0.1, 1.0, "per_layer", 0.5))
        if method.startswith("breadcrumbs"):
            genes.append(Gene("gamma", 0.0, 0.1, "per_model", 0.01))
        return tuple(genes)

    def size(self, gene: Gene) -> int:
        n = len(self.parents)
        return {"per_layer": n * self.layer_groups, "per_model": n, "global": 1}[gene.layout]

    def slots(self) -> int:
        return len(candidate_slots(len(self.parents), self.n_layers, self.dfs_repeats))


def _round(x: float) -> float:
    return round(float(x), 4)


def uniform_genome(space: SearchSpace, method: str) -> dict[str, Any]:
    """Equal weights (1/N), density 0.5, lambda 1; for dfs the first parent's own layer path."""
    if method == "dfs":
        include = [1.0 if i < space.n_layers else 0.0 for i in range(space.slots())]
        return {"method": "dfs", "genes": {"include": include, "scale": [1.0] * space.slots()}}
    return {"method": method,
            "genes": {g.name: [g.uniform] * space.size(g) for g in space.genes(method)}}


def random_genome(rng: random.Random, space: SearchSpace, method: str) -> dict[str, Any]:
    if method == "dfs":
        # expected path length = one model's depth; scales start at 1 (the untouched layers)
        p = space.n_layers / space.slots()
        include = [1.0 if rng.random() < p else 0.0 for _ in range(space.slots())]
        if not any(include):
            include[rng.randrange(len(include))] = 1.0
        return {"method": "dfs", "genes": {"include": include, "scale": [1.0] * space.slots()}}
    return {"method": method, "genes": {
        g.name: [_round(rng.uniform(g.low, g.high)) for _ in range(space.size(g))]
        for g in space.genes(method)}}


def crossover(rng: random.Random, a: dict, b: dict) -> dict:
    """Uniform crossover of two same-method genomes (DFS slots keep include and scale together)."""
    genes = {}
    if a["method"] == "dfs":
        pick = [rng.random() < 0.5 for _ in a["genes"]["include"]]
        genes = {k: [x if p else y for x, y, p in zip(a["genes"][k], b["genes"][k], pick)]
                 for k in ("include", "scale")}
    else:
        for name, values in a["genes"].items():
            genes[name] = [x if rng.random() < 0.5 else y for x, y in zip(values, b["genes"][name])]
    return {"method": a["method"], "genes": genes}


def mutate(rng: random.Random, genome: dict, space: SearchSpace, rate: float, sigma: float) -> dict:
    """Gaussian nudges (clipped to bounds) with probability ``rate`` per value; DFS bits flip."""
    genes = {k: list(v) for k, v in genome["genes"].items()}
    if genome["method"] == "dfs":
        genes["include"] = [1.0 - x if rng.random() < rate else x for x in genes["include"]]
        if not any(genes["include"]):
            genes["include"][rng.randrange(len(genes["include"]))] = 1.0
        genes["scale"] = [_round(min(1.5, max(0.5, x + rng.gauss(0, sigma))))
                          if rng.random() < rate else x for x in genes["scale"]]
        return {"method": "dfs", "genes": genes}
    for g in space.genes(genome["method"]):
        genes[g.name] = [_round(min(g.high, max(g.low, x + rng.gauss(0, sigma * (g.high - g.low)))))
                         if rng.random() < rate else x for x in genes[g.name]]
    return {"method": genome["method"], "genes": genes}


def switch_method(rng: random.Random, genome: dict, space: SearchSpace, method: str) -> dict:
    """Move a genome to ``method``, keeping (clipped) the genes both methods share."""
    fresh = random_genome(rng, space, method)
    if method == "dfs" or genome["method"] == "dfs":
        return fresh
    for g in space.genes(method):
        old = genome["genes"].get(g.name)
        if old is not None and len(old) == space.size(g):
            fresh["genes"][g.name] = [min(g.high, max(g.low, x)) for x in old]
    return fresh


def to_recipe(genome: dict, space: SearchSpace) -> dict[str, Any]:
    """The mergekit recipe a genome stands for."""
    method, genes = genome["method"], genome["genes"]
    if method == "dfs":
        return dfs_recipe(space.parents, space.n_layers, [x > 0.5 for x in genes["include"]],
                          genes["scale"], repeats=space.dfs_repeats, dtype=space.dtype)
    g_count = space.layer_groups
    models = []
    for m, parent in enumerate(space.parents):
        params = {}
        for g in space.genes(method):
            if g.layout == "per_layer":
                values = genes[g.name][m * g_count:(m + 1) * g_count]
                params[g.name] = values[0] if g_count == 1 else values
            elif g.layout == "per_model":
                params[g.name] = genes[g.name][m]
        models.append({"model": parent, "parameters": params} if params else {"model": parent})
    recipe: dict[str, Any] = {"merge_method": method}
    if method != "linear" and space.base is not None:
        recipe["base_model"] = space.base
    elif method in TASK_VECTOR + ("model_stock",):
        raise ForgeError(f"evomerge: {method} needs a base model (the parents' common ancestor)")
    recipe["models"] = models
    global_params = {g.name: genes[g.name][0] for g in space.genes(method) if g.layout == "global"}
    if global_params:
        recipe["parameters"] = global_params
    recipe["dtype"] = space.dtype
    return recipe


def uniform_recipe(method: str, parents: list[str], base: str | None, *,
                   dtype: str = "float32") -> dict[str, Any]:
    """The untuned baseline recipe of ``method`` (e.g. uniform task arithmetic: weights 1/N)."""
    if method == "dfs":
        raise ForgeError("evomerge: dfs has no uniform recipe; its untuned path is a parent itself")
    space = SearchSpace(tuple(parents), base, n_layers=1, layer_groups=1, dfs_repeats=1,
                        dtype=dtype)
    return to_recipe(uniform_genome(space, method), space)
