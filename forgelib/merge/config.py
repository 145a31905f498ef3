"""``evomerge:`` params: the evolutionary merge search (one frozen dataclass, checked on creation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from forgelib.configtools import FieldError, check, doc

SEARCHABLE_METHODS = ("task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
                      "breadcrumbs_ties", "della", "della_linear", "linear", "multislerp",
                      "model_stock", "dfs")
"""Registry methods with a genome over N parents (``slerp`` merges exactly two models and
``passthrough`` one; their N-model search is ``dfs``), plus ``dfs`` itself."""


BACKENDS = ("serial", "process", "ray")
"""Where candidates are merged and scored; none changes a result (see ``forgelib.merge.backends``)."""


@dataclass(frozen=True)
class EvoRayConfig:
    """``evomerge.ray:``: the Ray instance of ``backend: ray``."""

    num_cpus: int = doc("CPUs (= candidates at once) of the local Ray instance started for the search.", default=2)
    address: str | None = doc(
        "Address of an existing Ray cluster to join (e.g. `ray://head:10001` or `auto`); null starts a local "
        "instance with `num_cpus`, its temp dir under the system temp dir, shut down when the search ends.",
        default=None)
    max_retries: int = doc("Times Ray re-runs a candidate whose task raised or whose worker died, before the "
                           "search stops with an error naming the recipe hash.", default=1)

    def __post_init__(self) -> None:
        check(self.num_cpus >= 1, "num_cpus", "an int >= 1", self.num_cpus)
        check(self.max_retries >= 0, "max_retries", "an int >= 0", self.max_retries)


@dataclass(frozen=True)
class EvoMergeConfig:
    """A genetic search over merge recipes (method and per-model genes), scored on validation data."""

    generations: int = doc("Generations to run (the issue's default); a resumed run may raise it to continue.",
                           default=50)
    population: int = doc("Candidates per generation; each is merged and scored once (cached by recipe hash).",
                          default=8)
    seed: int = doc("Seeds every random choice of the search: the same seed replays the same run.", default=0)
    methods: tuple[str, ...] = doc(
        "Merge methods a genome may use (mergekit names, plus `dfs` for data-flow merging); "
        f"searchable: {', '.join(SEARCHABLE_METHODS)}.",
        default=("task_arithmetic", "ties", "dare_ties", "breadcrumbs_ties", "della", "linear", "dfs"))
    layer_groups: int = doc(
        "Values per per-model gene (weight, density): 1 is one value for the whole model, G > 1 is a "
        "mergekit gradient with G anchors interpolated linearly from the first to the last layer.", default=2)
    elite: int = doc("Best candidates copied unchanged into the next generation (never re-scored: cached).",
                     default=2)
    tournament: int = doc("Tournament size for parent selection: larger is greedier.", default=3)
    crossover_rate: float = doc(
        "Chance that a child of two same-method parents mixes their genes (uniform crossover).", default=0.7)
    mutation_rate: float = doc(
        "Chance per gene value of a Gaussian nudge (continuous) or a flip (DFS layer indicator).", default=0.25)
    mutation_sigma: float = doc("Standard deviation of a nudge, as a fraction of the gene's range.", default=0.15)
    method_switch_rate: float = doc("Chance that a child switches method, keeping the genes the two methods share.",
                                    default=0.1)
    dfs_repeats: int = doc("DFS path candidates: the parents' layers laid out this many times (the paper's r).",
                           default=2)
    dtype: Literal["float32", "float16", "bfloat16"] = doc("dtype of every candidate recipe (mergekit's `dtype`).",
                                                           default="float32")
    merge_seed: int = doc("Seed of the random drop masks of dare_* and della* candidates (`forge merge --seed`).",
                          default=0)
    fitness_limit: int | None = doc(
        "Validation examples per task scored for each candidate's fitness (null: the whole split). Fitness "
        "is the mean over all families of exact match on these examples.", default=64)
    backend: Literal["serial", "process", "ray"] = doc(
        "Where each generation's new candidates are merged and scored: `serial` (one after another, in this "
        "process), `process` (a local process pool of `workers`) or `ray` (Ray tasks; see `ray`). Results are "
        "identical on every backend, and a search may resume under another one.", default="serial")
    workers: int = doc("Worker processes of `backend: process` (each scores one candidate at a time).", default=2)
    ray: EvoRayConfig = doc("Settings of `backend: ray`.", default_factory=EvoRayConfig)

    def __post_init__(self) -> None:
        check(self.backend in BACKENDS, "backend", f"one of {', '.join(BACKENDS)}", self.backend)
        for name, low in (("generations", 1), ("workers", 1), ("population", 2), ("layer_groups", 1),
                          ("elite", 0), ("tournament", 1), ("dfs_repeats", 1)):
            check(getattr(self, name) >= low, name, f"an int >= {low}", getattr(self, name))
        check(self.fitness_limit is None or self.fitness_limit >= 1, "fitness_limit", "an int >= 1 or null",
              self.fitness_limit)
        check(self.elite < self.population, "elite", f"fewer than population ({self.population})", self.elite)
        check(self.tournament <= self.population, "tournament", f"at most population ({self.population})",
              self.tournament)
        for name in ("crossover_rate", "mutation_rate", "method_switch_rate"):
            check(0 <= getattr(self, name) <= 1, name, "a float in [0, 1]", getattr(self, name))
        check(0 < self.mutation_sigma <= 1, "mutation_sigma", "a float in (0, 1]", self.mutation_sigma)
        if not self.methods:
            raise FieldError("methods", "expected at least one method")
        for method in self.methods:
            if method not in SEARCHABLE_METHODS:
                raise FieldError("methods", f"{method!r} is not searchable; valid: {', '.join(SEARCHABLE_METHODS)}")
