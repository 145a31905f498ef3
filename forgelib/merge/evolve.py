"""Evolutionary search over merge recipes (Akiba et al., "Evolutionary Optimization of Model
Merging Recipes", arXiv 2403.13187): parameter-space genes (method, weights, densities per layer
group, lambda) and data-flow genes (which layer runs at each slot, with a scale) in one search.

Candidates are *recipes*: each genome is decoded to a mergekit recipe and the engine re-applies
it to the parents; weights are never perturbed directly. A recipe is scored once: the fitness of
every recipe hash is kept in ``state_dir/cache.json``, so elites, duplicates and a resumed or
repeated run cost nothing.

Operators: an elitist genetic algorithm. Tournament selection (size ``tournament``), uniform
crossover between same-method parents, Gaussian mutation clipped to each gene's bounds, bit flips
for the DFS layer indicator, an occasional method switch that keeps shared genes, and the
``elite`` best copied unchanged. Why not CMA-ES, which the paper (and mergekit-evolve) use:
our genome is mixed - a categorical method, a binary layer path and bounded continuous genes -
and CMA-ES only handles the continuous part; and with a population of 8 over 10-40 genes it is
below CMA-ES's own recommended ``4 + 3 ln(n)`` sample size, where its covariance estimate is
mostly noise. A GA with elitism is monotone in the best fitness and keeps every candidate a
valid recipe. Generation 0 holds the untuned recipe of each searched method (uniform weights;
for ``dfs`` the first parent's own path) so the search starts from the usual baselines.

Checkpointing: ``state_dir`` is a :class:`forgelib.resume.StateDir` whose identity is the search
settings (all but ``generations``, so a finished search can be extended), the parents and the
fingerprints of the inputs the fitness reads. After each generation the next population, the
history, the best candidate and the RNG states go to ``state_dir/state.json`` (+ ``rng.*``); each
scored recipe goes to ``cache.json`` as soon as it is scored. Randomness is drawn from
``Random(f"{seed}:{generation}")``, so a run killed at any point and resumed gives exactly the
result of an uninterrupted run, ``evaluations`` included (it counts distinct recipes scored).

Scaling out: each generation's new recipes are scored by ``config.backend`` (in this process, a
process pool or Ray tasks; :mod:`forgelib.merge.backends`). Breeding and the cache stay here, so
the backend changes where a candidate runs, not the search.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from forgelib.errors import ForgeError
from forgelib.io import read_json, write_json
from forgelib.merge.backends import Candidate, make_backend
from forgelib.merge.config import EvoMergeConfig
from forgelib.merge.genome import SearchSpace, crossover, mutate, random_genome, switch_method, \
    to_recipe, uniform_genome
from forgelib.resume import StateDir, load_rng, save_rng

Fitness = Callable[[Path], float]

RESUMABLE_ACROSS = ("generations", "backend", "workers", "ray")
"""Settings left out of the saved state's identity: changing them resumes the same search."""


@dataclass(frozen=True)
class EvoResult:
    best_recipe: dict[str, Any]
    """The best mergekit recipe found; ``merge_recipe(best_recipe, out, seed=config.merge_seed)``
    rebuilds the model."""
    best_fitness: float
    best_genome: dict[str, Any]
    history: list[dict[str, float]]
    """Per generation: best, mean and worst fitness of that generation's population."""
    evaluations: int
    """Distinct recipes scored by the whole search (a resumed search counts what it resumed)."""
    evaluations_this_run: int
    """Fitness calls made by this call (cache hits are free and not counted)."""


def recipe_hash(recipe: dict[str, Any], merge_seed: int) -> str:
    blob = json.dumps({"recipe": recipe, "merge_seed": merge_seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def evolve(parents: Sequence[str], base_model: str | None, fitness: Fitness, *,
           config: EvoMergeConfig = EvoMergeConfig(), state_dir: str | Path,
           progress: bool = True, inputs: dict[str, Any] | None = None,
           on_generation: Callable[[int, dict[str, float]], None] | None = None) -> EvoResult:
    """Search recipes merging ``parents`` (around ``base_model``) that maximize ``fitness``.

    ``fitness(model_dir)`` gets a freshly merged HF directory, deleted again when it returns;
    it must be deterministic for a resumed run to equal an uninterrupted one. With
    ``config.backend`` ``process`` or ``ray`` it runs in worker processes (see
    :mod:`forgelib.merge.backends`), so it must be picklable there. Paths are written
    into recipes as given and resolve against the working directory, like ``forge merge``.
    ``state_dir`` holds the cache, the checkpoint and scratch candidates; ``inputs`` (e.g.
    fingerprints of the parents and of the fitness data) joins the search settings in its
    identity, so saved state is resumed only by the same search. ``on_generation(g,
    {"best", "mean", "worst"})`` is called after each generation scored by this call (e.g. to
    log it with dvclive).
    """
    space = _space(parents, base_model, config)
    for method in config.methods:  # fail on a method that cannot be decoded before any merge
        to_recipe(uniform_genome(space, method), space)
    # Not in the identity: `generations` (a finished search can be extended) and where candidates
    # run (`backend`, `workers`, `ray`): a search may resume under another backend.
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE_ACROSS}
    store = StateDir(state_dir, {"config": settings, "parents": list(parents), "base_model": base_model,
                                 "inputs": dict(inputs or {})})
    resuming = store.open()
    state_dir = store.path
    cache_path, state_path = store.file("cache.json"), store.file("state.json")
    cache: dict[str, Any] = read_json(cache_path) if resuming and cache_path.is_file() else {}
    if resuming and state_path.is_file():
        state = read_json(state_path)
        load_rng(state_dir)
    else:
        state = {"generation": 0, "history": [], "best": None, "population": _initial(space, config)}
    evaluations = 0

    def score(population: list[dict], backend) -> list[float]:
        """Score a generation: its new recipes on the backend (each cached as soon as it is scored)."""
        nonlocal evaluations
        recipes = [to_recipe(g, space) for g in population]
        keys = [recipe_hash(recipe, config.merge_seed) for recipe in recipes]
        todo = {}  # the distinct uncached recipes, in population order
        for recipe, key in zip(recipes, keys):
            if key not in cache and key not in todo:
                todo[key] = Candidate(key, recipe, config.merge_seed)
        for key, value in backend.score(list(todo.values())):
            value = -math.inf if math.isnan(value) else value
            cache[key] = {"fitness": value, "recipe": todo[key].recipe}
            write_json(cache_path, cache)
            evaluations += 1
        return [cache[key]["fitness"] for key in keys]

    backend = make_backend(config, fitness, state_dir)  # starts workers only when first used
    with tqdm(total=config.generations, initial=min(state["generation"], config.generations),
              desc="evomerge", unit="gen", disable=not progress) as bar, contextlib.closing(backend):
        while state["generation"] < config.generations:
            generation = state["generation"]
            scored = list(zip(state["population"], score(state["population"], backend)))
            fits = [f for _, f in scored]
            state["history"].append(
                {"best": max(fits), "mean": sum(fits) / len(fits), "worst": min(fits)})
            ranked = sorted(scored, key=lambda pair: -pair[1])  # stable: ties keep population order
            if state["best"] is None or ranked[0][1] > state["best"]["fitness"]:
                state["best"] = {"genome": ranked[0][0], "fitness": ranked[0][1],
                                 "recipe": to_recipe(ranked[0][0], space)}
            rng = random.Random(f"{config.seed}:{generation}")
            state["population"] = _breed(rng, ranked, space, config)
            state["generation"] = generation + 1
            save_rng(state_dir)
            write_json(state_path, state)
            if on_generation is not None:
                on_generation(generation, state["history"][-1])
            bar.update(1)
            bar.set_postfix(best=f"{state['best']['fitness']:.4f}")
    best = state["best"]
    # Decoded again from the genome: a recipe read back from state.json has its keys sorted, and
    # the recipe.yaml written from it must not depend on whether the search was resumed.
    recipe = to_recipe(best["genome"], space)
    assert recipe == best["recipe"], "the best genome no longer decodes to its recipe"
    return EvoResult(recipe, best["fitness"], best["genome"], state["history"], len(cache), evaluations)


def _space(parents: Sequence[str], base_model: str | None, config: EvoMergeConfig) -> SearchSpace:
    if len(parents) < 2:
        raise ForgeError(f"evomerge: needs at least two parent models, got {list(parents)}")
    depths = {}
    for parent in parents:
        path = Path.cwd() / parent / "config.json"
        if not path.is_file():
            raise ForgeError(f"evomerge: parent {parent!r} has no config.json (looked at {path})")
        depths[parent] = json.loads(path.read_text()).get("num_hidden_layers")
    if len(set(depths.values())) != 1:
        raise ForgeError(f"evomerge: parents must have the same number of layers, got {depths}")
    return SearchSpace(tuple(parents), base_model, n_layers=int(next(iter(depths.values()))),
                       layer_groups=config.layer_groups, dfs_repeats=config.dfs_repeats,
                       dtype=config.dtype)


def _key(genome: dict, space: SearchSpace) -> str:
    return json.dumps(to_recipe(genome, space), sort_keys=True)


def _initial(space: SearchSpace, config: EvoMergeConfig) -> list[dict]:
    """The untuned recipe of each method first, then random genomes (all distinct when possible)."""
    population = [uniform_genome(space, m) for m in config.methods][: config.population]
    seen = {_key(g, space) for g in population}
    rng = random.Random(f"{config.seed}:init")
    while len(population) < config.population:
        for _ in range(20):
            genome = random_genome(rng, space, rng.choice(config.methods))
            if _key(genome, space) not in seen:
                break
        seen.add(_key(genome, space))
        population.append(genome)
    return population


def _tournament(rng: random.Random, ranked: list[tuple[dict, float]], size: int) -> dict:
    return ranked[min(rng.sample(range(len(ranked)), size))][0]  # ranked is best-first


def _breed(rng: random.Random, ranked: list[tuple[dict, float]], space: SearchSpace,
           config: EvoMergeConfig) -> list[dict]:
    population = [genome for genome, _ in ranked[: config.elite]]
    seen = {_key(g, space) for g in population}
    while len(population) < config.population:
        for _ in range(20):  # retry a few times rather than spend a slot on a known recipe
            child = _tournament(rng, ranked, config.tournament)
            if rng.random() < config.crossover_rate:
                other = _tournament(rng, ranked, config.tournament)
                if other["method"] == child["method"]:
                    child = crossover(rng, child, other)
            if len(config.methods) > 1 and rng.random() < config.method_switch_rate:
                target = rng.choice([m for m in config.methods if m != child["method"]])
                child = switch_method(rng, child, space, target)
            child = mutate(rng, child, space, config.mutation_rate, config.mutation_sigma)
            if _key(child, space) not in seen:
                break
        seen.add(_key(child, space))
        population.append(child)
    return population
