"""``train:`` params: the Forge loop and its controllers, one frozen dataclass per sub-section.

Every field has a ``doc()`` string (``--help`` text, the params reference) and ``__post_init__``
rejects bad values with a :class:`ForgeError` naming the full key, e.g. ``train.grokfast.alpha:
expected a float in (0, 1), got 1.5``. :meth:`TrainConfig.from_dict` builds the tree from the
``train:`` mapping of params.yaml (via :func:`forgelib.configtools.from_dict`, which rejects
unknown keys and wrong types). Every enhancement is off by default: the plain loop is the
baseline each one is measured against.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from forgelib.configtools import doc, from_dict
from forgelib.errors import ForgeError


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        raise ForgeError(f"{key}: expected {expected}, got {got!r}")


def _int_at_least(key: str, value: Any, low: int) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= low, key,
             f"an integer >= {low}", value)


def _float_in(key: str, value: Any, low: float, high: float, *, closed: bool = False) -> None:
    inside = _number(value) and (low <= value <= high if closed else low < value < high)
    bounds = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"
    _require(inside, key, f"a float in {bounds}", value)


def _float_at_least(key: str, value: Any, low: float) -> None:
    _require(_number(value) and value >= low, key, f"a float >= {low:g}", value)


def _choice(key: str, value: Any, options: tuple[str, ...]) -> None:
    _require(value in options, key, "one of " + ", ".join(options), value)


@dataclass(frozen=True)
class LambScheduleConfig:
    enabled: bool = doc(
        "Adapt Grokfast's λ from the train-validation accuracy gap at each evaluation.",
        default=False,
    )
    gap_high: float = doc(
        "Gap (train acc - val acc) at or above which λ is multiplied by ``factor`` (memorising).",
        default=0.2,
    )
    gap_low: float = doc(
        "Gap at or below which λ is divided by ``factor`` (generalised: stop amplifying).",
        default=0.05,
    )
    factor: float = doc("Multiplicative λ step per evaluation.", default=1.25)
    lamb_min: float = doc("Lower bound for λ.", default=0.5)
    lamb_max: float = doc("Upper bound for λ.", default=10.0)

    def __post_init__(self) -> None:
        key = "train.grokfast.schedule"
        _float_in(f"{key}.gap_high", self.gap_high, 0.0, 1.0, closed=True)
        _float_in(f"{key}.gap_low", self.gap_low, 0.0, 1.0, closed=True)
        _require(self.gap_low < self.gap_high, f"{key}.gap_low", "a value below gap_high", self.gap_low)
        _require(_number(self.factor) and self.factor > 1.0, f"{key}.factor", "a float > 1", self.factor)
        _float_at_least(f"{key}.lamb_min", self.lamb_min, 0.0)
        _require(_number(self.lamb_max) and self.lamb_max >= self.lamb_min, f"{key}.lamb_max",
                 "a float >= lamb_min", self.lamb_max)


@dataclass(frozen=True)
class GrokfastConfig:
    enabled: bool = doc("Amplify slow gradients (Grokfast, arXiv 2405.20233).", default=False)
    filter: str = doc(
        "ema: EMA filter after backward; ma: moving-average filter; ema_fused: the EMA filter inside "
        "GrokfastAdamW (it filters after gradient clipping, the controller before).",
        default="ema",
    )
    alpha: float = doc("EMA momentum (paper default 0.98; alpha^N ~ 0.1 for a target speedup N).", default=0.98)
    lamb: float | None = doc(
        "Amplification λ; unset means the paper default of the filter (EMA 2.0, MA 5.0).",
        default=None,
    )
    window_size: int = doc("MA window length in steps (paper default 100); the MA state, checkpoints included, "
                           "holds this many gradient copies.", default=100)
    warmup: bool = doc("MA: apply the filter only once the window is full (as in the paper).", default=True)
    schedule: LambScheduleConfig = doc(
        "λ scheduler driven by the train-validation gap.",
        default_factory=LambScheduleConfig,
    )

    def __post_init__(self) -> None:
        _choice("train.grokfast.filter", self.filter, ("ema", "ma", "ema_fused"))
        _float_in("train.grokfast.alpha", self.alpha, 0.0, 1.0)
        if self.lamb is not None:
            _float_at_least("train.grokfast.lamb", self.lamb, 0.0)
        _int_at_least("train.grokfast.window_size", self.window_size, 1)

    def effective_lamb(self) -> float:
        if self.lamb is not None:
            return float(self.lamb)
        return 5.0 if self.filter == "ma" else 2.0


@dataclass(frozen=True)
class EdgeConfig:
    enabled: bool = doc(
        "Edge-of-chaos curriculum: move each family's difficulty to keep success inside ``band``.",
        default=False,
    )
    band: tuple[float, float] = doc(
        "Target success band [lo, hi] (a heuristic of the original system; 85% rule: Wilson 2019).",
        default=(0.55, 0.75),
    )
    window: int = doc("Recent training examples per family the success rate is measured on.", default=64)
    min_samples: int = doc("A family's level moves only once its window holds this many examples.", default=32)
    update_every: int = doc("Steps between level decisions.", default=10)
    start_level: int | None = doc(
        "Level every family starts at; unset means the lowest level present in the train split.",
        default=None,
    )

    def __post_init__(self) -> None:
        band = self.band
        _require(isinstance(band, (tuple, list)) and len(band) == 2 and all(_number(b) for b in band),
                 "train.edge.band", "[lo, hi] with 0 <= lo < hi <= 1", band)
        _require(0.0 <= band[0] < band[1] <= 1.0, "train.edge.band", "[lo, hi] with 0 <= lo < hi <= 1",
                 list(band))
        _int_at_least("train.edge.window", self.window, 1)
        _int_at_least("train.edge.min_samples", self.min_samples, 1)
        _require(self.min_samples <= self.window, "train.edge.min_samples", "a value <= train.edge.window",
                 self.min_samples)
        _int_at_least("train.edge.update_every", self.update_every, 1)
        if self.start_level is not None:
            _int_at_least("train.edge.start_level", self.start_level, 0)


@dataclass(frozen=True)
class GeometryConfig:
    enabled: bool = doc(
        "Probe the TwoNN intrinsic dimension of hidden states and classify the grokking stage.",
        default=False,
    )
    every: int = doc(
        "Steps between probes (the probe is one no-grad forward pass over ``probe_size`` prompts).",
        default=100,
    )
    layers: tuple[int, ...] = doc(
        "Indices into the model's hidden states (0 = embeddings, -1 = final); the stage uses the last.",
        default=(-1,),
    )
    probe_size: int = doc(
        "Validation prompts in the fixed probe set (one point each: the last prompt token).",
        default=256,
    )
    trend_window: int = doc("Recent probes the ID trend (relative least-squares slope) is computed over.", default=4)

    def __post_init__(self) -> None:
        _int_at_least("train.geometry.every", self.every, 1)
        _require(isinstance(self.layers, (tuple, list)) and len(self.layers) > 0
                 and all(isinstance(i, int) and not isinstance(i, bool) for i in self.layers),
                 "train.geometry.layers", "a non-empty list of integers", self.layers)
        _int_at_least("train.geometry.probe_size", self.probe_size, 8)
        _int_at_least("train.geometry.trend_window", self.trend_window, 2)


@dataclass(frozen=True)
class SelfModelConfig:
    enabled: bool = doc(
        "Auxiliary head predicting the model's own hidden activations (arXiv 2407.10188).",
        default=False,
    )
    weight: float = doc("Weight of the self-model MSE in the loss (the paper's AW).", default=0.1)
    target_layer: int | None = doc(
        "Hidden-state index to predict; unset means the middle layer (num_layers // 2).",
        default=None,
    )
    source_layer: int = doc("Hidden-state index the head reads (-1: the final hidden state).", default=-1)

    def __post_init__(self) -> None:
        _float_at_least("train.self_model.weight", self.weight, 0.0)
        if self.target_layer is not None:
            _require(isinstance(self.target_layer, int), "train.self_model.target_layer", "an integer",
                     self.target_layer)
        _require(isinstance(self.source_layer, int), "train.self_model.source_layer", "an integer",
                 self.source_layer)


@dataclass(frozen=True)
class DreamConfig:
    enabled: bool = doc(
        "Dream cycles: replay the hardest real examples mixed with verified self-generated ones.",
        default=False,
    )
    every: int = doc("Steps between dream cycles.", default=100)
    steps: int = doc("Optimizer steps per dream cycle.", default=5)
    buffer_size: int = doc("Hard-example buffer capacity (highest per-example loss wins).", default=256)
    self_fraction: float = doc(
        "Fraction of each dream batch taken from verified self-generated samples.",
        default=0.25,
    )
    self_prompts: int = doc(
        "Train prompts the model answers by sampling in each cycle (kept only when verified).",
        default=64,
    )
    temperature: float = doc("Sampling temperature when the temperature curriculum is off.", default=0.7)

    def __post_init__(self) -> None:
        _int_at_least("train.dreams.every", self.every, 1)
        _int_at_least("train.dreams.steps", self.steps, 1)
        _int_at_least("train.dreams.buffer_size", self.buffer_size, 1)
        _float_in("train.dreams.self_fraction", self.self_fraction, 0.0, 1.0, closed=True)
        _int_at_least("train.dreams.self_prompts", self.self_prompts, 0)
        _float_at_least("train.dreams.temperature", self.temperature, 0.0)


@dataclass(frozen=True)
class TemperatureConfig:
    enabled: bool = doc(
        "Ramp the dream sampling temperature from narrow (``start``) to wide (``end``).",
        default=False,
    )
    start: float = doc(
        "Temperature at step 0 (near-greedy: self-samples close to the model's best answer).",
        default=0.3,
    )
    end: float = doc("Temperature once the ramp is over (the model's own distribution, unsharpened).", default=1.0)
    ramp_steps: int | None = doc(
        "Steps of the linear ramp; unset means the whole run (train.max_steps).",
        default=None,
    )

    def __post_init__(self) -> None:
        _float_at_least("train.temperature.start", self.start, 0.0)
        _float_at_least("train.temperature.end", self.end, 0.0)
        if self.ramp_steps is not None:
            _int_at_least("train.temperature.ramp_steps", self.ramp_steps, 1)


@dataclass(frozen=True)
class WandbConfig:
    project: str | None = doc("Weights & Biases project; unset disables W&B (dvclive is always on).", default=None)
    mode: str = doc(
        "online or offline (offline writes a local run to sync later with ``wandb sync``).",
        default="offline",
    )

    def __post_init__(self) -> None:
        if self.project is not None:
            _require(isinstance(self.project, str) and self.project != "", "train.wandb.project",
                     "a non-empty string", self.project)
        _choice("train.wandb.mode", self.mode, ("online", "offline"))


ENHANCEMENTS = ("grokfast", "edge", "geometry", "self_model", "dreams", "temperature")
"""The switchable sub-sections (``--enable-<name>``; ``--enable-all`` turns on every one)."""


@dataclass(frozen=True)
class TrainConfig:
    seed: int = doc(
        "Seeds the batch order, the samplers and torch; same seed and params give the same weights.",
        default=0,
    )
    max_steps: int = doc("Optimizer steps of the main loop (dream steps come on top).", default=300)
    batch_size: int = doc("Examples per step.", default=64)
    source: str = doc(
        "split: rows of the prepared train split; generate: fresh generator examples at any level "
        "(validation/test prompts excluded); auto: generate when the edge curriculum is on (it needs "
        "levels the prepared split does not hold), split otherwise.",
        default="auto",
    )
    lr: float = doc("Peak learning rate (AdamW).", default=1e-3)
    weight_decay: float = doc("AdamW decoupled weight decay.", default=0.0)
    betas: tuple[float, float] = doc("AdamW betas (Grokfast paper setup).", default=(0.9, 0.98))
    warmup_steps: int = doc("Linear learning-rate warmup.", default=10)
    lr_schedule: str = doc(
        "After warmup: constant, or cosine decay to 10% of ``lr`` at ``max_steps``.",
        default="constant",
    )
    grad_clip: float = doc("Clip the (filtered) gradient's global norm to this; 0 disables clipping.", default=1.0)
    eval_every: int = doc(
        "Steps between evaluations (teacher-forced exact match on train and validation).",
        default=50,
    )
    eval_limit: int = doc("Examples per task and split in each in-loop evaluation.", default=200)
    log_every: int = doc("Steps between dvclive records.", default=10)
    checkpoint_every: int = doc("Steps between checkpoints in the persist directory (0 disables).", default=100)
    keep_checkpoints: int = doc("Most recent checkpoints kept.", default=2)
    wandb: WandbConfig = doc("Optional Weights & Biases logging.", default_factory=WandbConfig)
    grokfast: GrokfastConfig = doc("Grokfast gradient filter and λ schedule.", default_factory=GrokfastConfig)
    edge: EdgeConfig = doc("Edge-of-chaos difficulty curriculum.", default_factory=EdgeConfig)
    geometry: GeometryConfig = doc("Intrinsic-dimension probe and grokking stage.", default_factory=GeometryConfig)
    self_model: SelfModelConfig = doc("Self-model auxiliary head.", default_factory=SelfModelConfig)
    dreams: DreamConfig = doc("Dream cycles (hard-example replay).", default_factory=DreamConfig)
    temperature: TemperatureConfig = doc("Temperature curriculum of self-generated samples.",
                                         default_factory=TemperatureConfig)

    def __post_init__(self) -> None:
        _int_at_least("train.seed", self.seed, 0)
        _int_at_least("train.max_steps", self.max_steps, 1)
        _int_at_least("train.batch_size", self.batch_size, 1)
        _choice("train.source", self.source, ("auto", "split", "generate"))
        _require(_number(self.lr) and self.lr > 0, "train.lr", "a float > 0", self.lr)
        _float_at_least("train.weight_decay", self.weight_decay, 0.0)
        _require(isinstance(self.betas, (tuple, list)) and len(self.betas) == 2
                 and all(_number(b) and 0.0 <= b < 1.0 for b in self.betas),
                 "train.betas", "two floats in [0, 1)", self.betas)
        _int_at_least("train.warmup_steps", self.warmup_steps, 0)
        _choice("train.lr_schedule", self.lr_schedule, ("constant", "cosine"))
        _float_at_least("train.grad_clip", self.grad_clip, 0.0)
        _int_at_least("train.eval_every", self.eval_every, 1)
        _int_at_least("train.eval_limit", self.eval_limit, 1)
        _int_at_least("train.log_every", self.log_every, 1)
        _int_at_least("train.checkpoint_every", self.checkpoint_every, 0)
        _int_at_least("train.keep_checkpoints", self.keep_checkpoints, 1)

    def with_enabled(self, *names: str) -> "TrainConfig":
        """A copy with the named enhancements switched on (``all``: every one), for CLI flags
        such as ``--enable-grokfast``; their other params stay as configured."""
        valid = ENHANCEMENTS + ("all",)
        for name in names:
            if name not in valid:
                raise ForgeError(f"unknown enhancement {name!r}; valid: {', '.join(valid)}")
        chosen = ENHANCEMENTS if "all" in names else names
        return dataclasses.replace(self, **{n: dataclasses.replace(getattr(self, n), enabled=True) for n in chosen})

    def with_wandb(self, project: str | None, mode: str | None = None) -> "TrainConfig":
        """A copy logging to W&B ``project`` (``--wandb-project``); ``None`` keeps the params."""
        if project is None:
            return self
        return dataclasses.replace(self, wandb=WandbConfig(project=project, mode=mode or self.wandb.mode))

    def effective_source(self) -> str:
        if self.source != "auto":
            return self.source
        return "generate" if self.edge.enabled else "split"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, section: str = "train") -> "TrainConfig":
        """Build from the params.yaml mapping; unknown keys and bad values raise ForgeError."""
        return from_dict(cls, data or {}, section)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

