"""Parameters of the evolutionary merge search (the ``evomerge`` section of params.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from forgelib.errors import ForgeError

SEARCHABLE_METHODS = ("task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
                      "breadcrumbs_ties", "della", "della_linear", "linear", "multislerp",
                      "model_stock", "dfs")
"""Registry methods with a genome over N parents (``slerp`` merges exactly two models and
``passthrough`` one; their N-model search is ``dfs``), plus ``dfs`` itself."""


@dataclass(frozen=True)
class EvoMergeConfig:
    generations: int = 50
    """Generations to run (the issue's default); a resumed run may raise it to continue."""
    population: int = 8
    """Candidates per generation; each is merged and scored once (cached by recipe hash)."""
    seed: int = 0
    """Seeds every random choice of the search: the same seed replays the same run."""
    methods: tuple[str, ...] = ("task_arithmetic", "ties", "dare_ties", "breadcrumbs_ties",
                                "della", "linear", "dfs")
    """Merge methods a genome may use (mergekit names, plus ``dfs`` for data-flow merging)."""
    layer_groups: int = 2
    """Values per per-model gene (weight, density): 1 is one value for the whole model, G > 1
    is a mergekit gradient with G anchors interpolated linearly from the first to the last layer."""
    elite: int = 2
    """Best candidates copied unchanged into the next generation (never re-scored: cached)."""
    tournament: int = 3
    """Tournament size for parent selection: larger is greedier."""
    crossover_rate: float = 0.7
    """Chance that a child of two same-method parents mixes their genes (uniform crossover)."""
    mutation_rate: float = 0.25
    """Chance per gene value of a Gaussian nudge (continuous) or a flip (DFS layer indicator)."""
    mutation_sigma: float = 0.15
    """Standard deviation of a nudge, as a fraction of the gene's range."""
    method_switch_rate: float = 0.1
    """Chance that a child switches method, keeping the genes the two methods share."""
    dfs_repeats: int = 2
    """DFS path candidates: the parents' layers laid out this many times (the paper's r)."""
    dtype: str = "float32"
    """dtype of every candidate recipe (mergekit's ``dtype``)."""
    merge_seed: int = 0
    """Seed of the random drop masks of dare_* and della* candidates (``forge merge --seed``)."""
    fitness_limit: int | None = 64
    """Validation examples per task scored for each candidate's fitness (None = the whole split).
    Fitness is the mean over all families of exact match on these examples."""

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            object.__setattr__(self, "methods", (self.methods,))
        elif isinstance(self.methods, list):  # from YAML
            object.__setattr__(self, "methods", tuple(self.methods))
        for name, low in (("generations", 1), ("population", 2), ("layer_groups", 1),
                          ("elite", 0), ("tournament", 1), ("dfs_repeats", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ForgeError(f"evomerge.{name}: expected an int >= {low}, got {value!r}")
        for name in ("seed", "merge_seed"):
            if not isinstance(getattr(self, name), int):
                raise ForgeError(f"evomerge.{name}: expected an int, got {getattr(self, name)!r}")
        if self.fitness_limit is not None and (isinstance(self.fitness_limit, bool) or not isinstance(self.fitness_limit, int) or self.fitness_limit < 1):
            raise ForgeError(f"evomerge.fitness_limit: expected an int >= 1 or null, got {self.fitness_limit!r}")
        if self.elite >= self.population:
            raise ForgeError(f"evomerge.elite: expected fewer than population "
                             f"({self.population}), got {self.elite}")
        if self.tournament > self.population:
            raise ForgeError(f"evomerge.tournament: expected at most population "
                             f"({self.population}), got {self.tournament}")
        for name in ("crossover_rate", "mutation_rate", "method_switch_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ForgeError(f"evomerge.{name}: expected a float in [0, 1], got {value!r}")
        if not isinstance(self.mutation_sigma, (int, float)) or not 0 < self.mutation_sigma <= 1:
            raise ForgeError(f"evomerge.mutation_sigma: expected a float in (0, 1], "
                             f"got {self.mutation_sigma!r}")
        if not self.methods:
            raise ForgeError("evomerge.methods: expected at least one method")
        for method in self.methods:
            if method not in SEARCHABLE_METHODS:
                raise ForgeError(f"evomerge.methods: {method!r} is not searchable; "
                                 f"valid: {', '.join(SEARCHABLE_METHODS)}")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ForgeError(f"evomerge.dtype: expected float32, float16 or bfloat16, "
                             f"got {self.dtype!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "EvoMergeConfig":
        """Build from a params.yaml section; unknown keys are errors that name the key."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ForgeError(f"evomerge.{key}: unknown key; valid: {', '.join(sorted(known))}")
        return cls(**values)
