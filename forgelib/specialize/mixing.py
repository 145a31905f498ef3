"""Transformer²'s few-shot adaptation: mix the experts, ``z' = sum_k a_k z_k``, with the ``a_k``
found by the cross-entropy method on a handful of examples (Sun et al. 2025, arXiv 2501.06252,
"few-shot adaptation"; reference settings: population 32, elite 20%, ``a_k`` in [0, 1]).

:func:`cem` is the search alone, over any fitness. The reference code starts the sampler at the
initial solution with a std of half the range, clips samples to the range, re-evaluates the best
solution so far in every population, and breaks ties in accuracy with the log-likelihood of the
answers; :func:`mixing_fitness` is that key, ``(exact match, -mean answer NLL)`` on the shots,
compared as a tuple. The reference breaks ties with the log-likelihood of the correct samples
only; the NLL of every reference answer here also orders candidates that solve nothing yet.

:func:`few_shot_mix` runs it on a task no expert was trained on and reports the mixed expert,
every single expert and the unadapted model on held-out examples of that task. The shots and the
held-out examples are disjoint; nothing is chosen on the held-out ones.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from forgelib.data.tasks import generate
from forgelib.eval.evaluate import score_rows
from forgelib.eval.generate import greedy_answers
from forgelib.eval.scoring import accuracy, exact_match
from forgelib.specialize.svf import Expert, Factors, mix, svf_applied


def cem(fitness: Callable[[Tensor], tuple], dim: int, *, population: int, elite_fraction: float, iterations: int,
        seed: int, low: float = 0.0, high: float = 1.0, init: Tensor | None = None) -> tuple[Tensor, tuple, list[dict]]:
    """Maximise ``fitness`` over ``[low, high]^dim``; returns the best point, its fitness and a history.

    Each iteration samples ``population`` points from a diagonal Gaussian (clipped to the range),
    the first replaced by the best point so far, and refits the Gaussian to the top
    ``elite_fraction`` of them."""
    generator = torch.Generator().manual_seed(seed)
    mean = init.clone().float() if init is not None else torch.full((dim,), (low + high) / 2)
    std = torch.full((dim,), (high - low) / 2)
    best, best_fit = mean.clone(), None
    n_elite = max(1, int(elite_fraction * population))
    history = []
    for it in tqdm(range(iterations), desc="cem", leave=False):
        points = (torch.randn(population, dim, generator=generator) * std + mean).clamp(low, high)
        points[0] = best
        fits = [fitness(p) for p in points]
        order = sorted(range(population), key=lambda i: fits[i], reverse=True)
        if best_fit is None or fits[order[0]] > best_fit:
            best, best_fit = points[order[0]].clone(), fits[order[0]]
        elites = points[order[:n_elite]]
        mean = elites.mean(dim=0)
        std = elites.std(dim=0, unbiased=True) if n_elite > 1 else std
        history.append({"iteration": it, "best": list(best_fit), "population_best": list(fits[order[0]]),
                        "mean": mean.tolist()})
    return best, best_fit, history


def mixing_fitness(model, tokenizer, svd: Mapping[str, Factors], experts: Sequence[Expert], max_mult: float,
                   rows: Sequence[dict], *, batch_size: int = 256) -> Callable[[Tensor], tuple[float, float]]:
    """``a -> (teacher-forced exact match, -mean answer NLL)`` of the mixed expert on ``rows``."""
    def fitness(coefficients: Tensor) -> tuple[float, float]:
        with svf_applied(model, svd, mix(experts, coefficients.tolist()), max_mult):
            scores = score_rows(model, tokenizer, rows, batch_size=batch_size)
        return accuracy(scores.correct.tolist()), -float(scores.loss)

    return fitness


def greedy_accuracy(model, tokenizer, svd: Mapping[str, Factors], expert: Expert | None, max_mult: float,
                    rows: Sequence[dict], *, batch_size: int = 256) -> float:
    """Greedy exact match of ``rows`` with ``expert`` applied (None: the unadapted model)."""
    budget = max(len(r["answer"]) for r in rows) + 2
    with svf_applied(model, svd, expert, max_mult):
        preds = greedy_answers(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=budget,
                               batch_size=batch_size)
    return accuracy(exact_match(preds, [r["answer"] for r in rows]))


def few_shot_mix(model, tokenizer, svd: Mapping[str, Factors], experts: Mapping[str, Expert], max_mult: float, *,
                 task: str, level: int, shots: int, test_examples: int, population: int, elite_fraction: float,
                 iterations: int, seed: int, batch_size: int = 256) -> dict:
    """CEM-mixed experts vs each single expert vs the unadapted model on held-out examples of ``task``.

    ``best_single`` is the best single expert *on the held-out examples* (an oracle choice, so
    the stricter baseline); ``single_chosen_on_shots`` is the one a user could pick from the
    shots alone."""
    rows = generate(task, level, shots + test_examples, seed=seed)
    shot_rows, test_rows = rows[:shots], rows[shots:]
    names = list(experts)
    fitness = mixing_fitness(model, tokenizer, svd, [experts[n] for n in names], max_mult, shot_rows,
                             batch_size=batch_size)
    init = torch.full((len(names),), 1.0 / len(names))  # the reference's start: equal weights
    coefficients, best_fit, history = cem(fitness, len(names), population=population, elite_fraction=elite_fraction,
                                          iterations=iterations, seed=seed, init=init)
    mixed = mix([experts[n] for n in names], coefficients.tolist())
    singles = {n: greedy_accuracy(model, tokenizer, svd, experts[n], max_mult, test_rows, batch_size=batch_size)
               for n in names}
    shot_fitness = {n: fitness(torch.eye(len(names))[i]) for i, n in enumerate(names)}
    chosen_on_shots = max(names, key=lambda n: shot_fitness[n])
    best_single = max(names, key=lambda n: singles[n])
    return {
        "task": task, "level": level, "shots": len(shot_rows), "n_test": len(test_rows),
        "mixed": greedy_accuracy(model, tokenizer, svd, mixed, max_mult, test_rows, batch_size=batch_size),
        "best_single": singles[best_single], "best_single_expert": best_single,
        "unadapted": greedy_accuracy(model, tokenizer, svd, None, max_mult, test_rows, batch_size=batch_size),
        "single_chosen_on_shots": chosen_on_shots, "singles": singles,
        "coefficients": dict(zip(names, coefficients.tolist())),
        "shots_fitness": {"mixed": list(best_fit), **{n: list(f) for n, f in shot_fitness.items()}},
        "history": history,
    }
