"""The evolutionary recipe search: reproducible, resumable, cached, and monotone in its best."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from forgelib.configtools import from_dict
from forgelib.errors import ForgeError
from forgelib.merge.config import SEARCHABLE_METHODS, EvoMergeConfig
from forgelib.merge.engine import merge_recipe
from forgelib.merge.evolve import evolve
from forgelib.merge.genome import uniform_recipe

PROBE = "model.layers.0.mlp.down_proj.weight"
CONFIG = EvoMergeConfig(generations=3, population=4, seed=11, elite=1, layer_groups=1,
                        methods=("task_arithmetic", "ties", "linear", "dfs"))


def read(model_dir: Path, name: str = PROBE) -> torch.Tensor:
    with safe_open(Path(model_dir) / "model.safetensors", framework="pt") as f:
        return f.get_tensor(name)


@pytest.fixture
def fitness(family):
    """Negative distance of one merged tensor to a target no parent has: 0.7*d0 + 0.3*d1."""
    base = read(family["ancestor"])
    target = base + 0.7 * (read(family["child0"]) - base) + 0.3 * (read(family["child1"]) - base)
    calls = []

    def score(model_dir: Path) -> float:
        calls.append(model_dir)
        return -float((read(model_dir) - target).norm())

    score.calls = calls
    return score


def run(family, state_dir, fitness, config=CONFIG):
    parents = [str(family[n]) for n in ("child0", "child1", "child2")]
    return evolve(parents, str(family["ancestor"]), fitness, config=config, state_dir=state_dir,
                  progress=False)


def test_search_is_reproducible_and_never_loses_its_best(family, fitness, tmp_path):
    logged = []
    parents = [str(family[n]) for n in ("child0", "child1", "child2")]
    first = evolve(parents, str(family["ancestor"]), fitness, config=CONFIG, state_dir=tmp_path / "a",
                   progress=False, on_generation=lambda g, h: logged.append((g, h)))
    assert logged == list(enumerate(first.history))
    second = run(family, tmp_path / "b", fitness)
    assert first.best_recipe == second.best_recipe
    assert first.history == second.history and len(first.history) == 3
    bests = [h["best"] for h in first.history]
    assert bests == sorted(bests)  # elitism: the best never gets worse
    assert all(h["worst"] <= h["mean"] <= h["best"] for h in first.history)
    assert first.best_fitness == max(bests)
    # generation 0 holds the uniform task-arithmetic baseline, so the search is at least as good
    uniform = merge_recipe(uniform_recipe("task_arithmetic", parents, str(family["ancestor"])), tmp_path / "u")
    assert first.best_fitness >= fitness(uniform)
    # the best recipe replays to the scored model
    replay = merge_recipe(first.best_recipe, tmp_path / "replay", seed=CONFIG.merge_seed)
    assert fitness(replay) == first.best_fitness
    cache = json.loads((tmp_path / "a" / "cache.json").read_text())
    assert len(cache) == first.evaluations == first.evaluations_this_run
    assert not list((tmp_path / "a").glob("candidate-*"))  # scratch candidates are removed


def test_resume_after_a_kill_gives_the_uninterrupted_result(family, fitness, tmp_path):
    full = run(family, tmp_path / "full", fitness)

    class Killed(Exception):
        pass

    def dies_on_sixth(model_dir: Path) -> float:
        if len(fitness.calls) >= 5:
            raise Killed
        return fitness(model_dir)

    fitness.calls.clear()
    with pytest.raises(Killed):
        run(family, tmp_path / "resumed", dies_on_sixth)
    resumed = run(family, tmp_path / "resumed", fitness)
    assert resumed.best_recipe == full.best_recipe
    assert resumed.history == full.history
    assert resumed.evaluations == full.evaluations  # distinct recipes scored by the whole search
    assert resumed.evaluations_this_run == full.evaluations - 5  # the 5 scored before the kill were cached
    again = run(family, tmp_path / "resumed", fitness)
    assert again.evaluations_this_run == 0 and again.history == full.history
    longer = run(family, tmp_path / "resumed", fitness,
                 EvoMergeConfig(**{**CONFIG.__dict__, "generations": 4}))
    assert longer.history[:3] == full.history and len(longer.history) == 4


def test_a_state_dir_from_other_settings_restarts_and_says_why(family, fitness, tmp_path, capsys):
    run(family, tmp_path / "s", fitness, EvoMergeConfig(**{**CONFIG.__dict__, "generations": 1}))
    other = run(family, tmp_path / "s", fitness, EvoMergeConfig(**{**CONFIG.__dict__, "seed": 12}))
    assert "(config.seed changed); starting fresh" in capsys.readouterr().err
    fresh = run(family, tmp_path / "fresh", fitness, EvoMergeConfig(**{**CONFIG.__dict__, "seed": 12}))
    assert other.history == fresh.history and other.evaluations == fresh.evaluations


@pytest.mark.parametrize("values, key", [
    ({"population": 1}, "evomerge.population"),
    ({"elite": 8}, "evomerge.elite"),
    ({"methods": ("slerp",)}, "evomerge.methods"),
    ({"mutation_rate": 1.5}, "evomerge.mutation_rate"),
    ({"popsize": 3}, "evomerge.popsize"),
])
def test_config_errors_name_the_key(values, key):
    with pytest.raises(ForgeError, match=key):
        from_dict(EvoMergeConfig, values, "evomerge")


def test_config_accepts_lists_from_yaml():
    assert from_dict(EvoMergeConfig, {"methods": ["ties", "dfs"]}, "evomerge").methods == ("ties", "dfs")


@pytest.mark.parametrize("method", SEARCHABLE_METHODS)
def test_every_searchable_method_decodes_to_a_recipe_that_merges(method, family, tmp_path):
    import random

    from forgelib.merge.genome import SearchSpace, mutate, random_genome, to_recipe

    space = SearchSpace(tuple(str(family[n]) for n in ("child0", "child1", "child2")),
                        str(family["ancestor"]), n_layers=2, layer_groups=2, dfs_repeats=2,
                        dtype="float32")
    rng = random.Random(0)
    genome = mutate(rng, random_genome(rng, space, method), space, rate=1.0, sigma=0.5)
    out = merge_recipe(to_recipe(genome, space), tmp_path / "m")
    assert torch.isfinite(read(out)).all()


def test_uniform_task_arithmetic_is_weights_one_over_n():
    recipe = uniform_recipe("task_arithmetic", ["a", "b", "c"], "base")
    assert recipe == {"merge_method": "task_arithmetic", "base_model": "base",
                      "models": [{"model": m, "parameters": {"weight": 1 / 3}} for m in "abc"],
                      "parameters": {"lambda": 1.0}, "dtype": "float32"}
