"""``train:`` params: the Forge loop and its controllers, one frozen dataclass per sub-section.

Every field has a ``doc()`` string (``--help`` text, the params reference) and ``__post_init__``
checks ranges with :func:`forgelib.configtools.check`, which names the field;
:func:`forgelib.configtools.from_dict` (via ``forgelib.config.load_section("train")``) builds the
tree from the ``train:`` mapping, rejects unknown keys and wrong types, and prefixes the path,
e.g. ``train.grokfast.alpha: expected a float in (0, 1), got 1.5``. Every enhancement is off by
default: the plain loop is the baseline each one is measured against.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from forgelib.configtools import check, doc
from forgelib.errors import ForgeError


@dataclass(frozen=True)
class LambScheduleConfig:
    """λ schedule: scale λ by the train-validation accuracy gap at each evaluation (ours, not the paper's)."""

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
        check(0 <= self.gap_high <= 1, "gap_high", "a float in [0, 1]", self.gap_high)
        check(0 <= self.gap_low <= 1, "gap_low", "a float in [0, 1]", self.gap_low)
        check(self.gap_low < self.gap_high, "gap_low", "a value below gap_high", self.gap_low)
        check(self.factor > 1, "factor", "a float > 1", self.factor)
        check(self.lamb_min >= 0, "lamb_min", "a float >= 0", self.lamb_min)
        check(self.lamb_max >= self.lamb_min, "lamb_max", "a float >= lamb_min", self.lamb_max)


@dataclass(frozen=True)
class GrokfastConfig:
    """Grokfast (Lee et al. 2024, arXiv 2405.20233): amplify the slow component of the gradients."""

    enabled: bool = doc("Amplify slow gradients (Grokfast, arXiv 2405.20233).", default=False)
    filter: Literal["ema", "ma", "ema_fused"] = doc(
        "ema: EMA filter after backward; ma: moving-average filter; ema_fused: the EMA filter inside "
        "GrokfastAdamW (it filters after gradient clipping, the controller before).",
        default="ema",
    )
    alpha: float = doc("EMA momentum (paper default 0.98; alpha^N ~ 0.1 for a target speedup N).", default=0.98)
    lamb: float | None = doc(
        "Amplification λ at the start of the run; unset means the paper default of the filter (EMA 2.0, "
        "MA 5.0). From then on the Grokfast controller owns λ (the schedule below changes it there).",
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
        check(0 < self.alpha < 1, "alpha", "a float in (0, 1)", self.alpha)
        check(self.lamb is None or self.lamb >= 0, "lamb", "a float >= 0", self.lamb)
        check(self.window_size >= 1, "window_size", "an integer >= 1", self.window_size)

    def effective_lamb(self) -> float:
        """The λ a run starts from (the Grokfast controller owns it from then on)."""
        if self.lamb is not None:
            return float(self.lamb)
        return 5.0 if self.filter == "ma" else 2.0


@dataclass(frozen=True)
class EdgeConfig:
    """Edge-of-chaos curriculum: per family, move the difficulty level to keep success inside a band."""

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
        band = "[lo, hi] with 0 <= lo < hi <= 1"
        check(len(self.band) == 2, "band", band, self.band)
        check(0 <= self.band[0] < self.band[1] <= 1, "band", band, list(self.band))
        check(self.window >= 1, "window", "an integer >= 1", self.window)
        check(self.min_samples >= 1, "min_samples", "an integer >= 1", self.min_samples)
        check(self.min_samples <= self.window, "min_samples", f"a value <= window ({self.window})", self.min_samples)
        check(self.update_every >= 1, "update_every", "an integer >= 1", self.update_every)
        check(self.start_level is None or self.start_level >= 0, "start_level", "an integer >= 0", self.start_level)


@dataclass(frozen=True)
class GeometryConfig:
    """TwoNN intrinsic dimension of hidden states (Facco et al. 2017), probed during training."""

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
    family: str | None = doc(
        "Task family the probe watches: its validation prompts make the probe set and its train/validation "
        "accuracy feeds the stage rule (null: every task and the overall accuracy). A multi-task model's "
        "overall accuracy moves smoothly while one family groks, so the showcase watches `modular`.",
        default=None,
    )

    def __post_init__(self) -> None:
        check(self.every >= 1, "every", "an integer >= 1", self.every)
        check(len(self.layers) > 0, "layers", "a non-empty list of integers", self.layers)
        check(self.probe_size >= 8, "probe_size", "an integer >= 8", self.probe_size)
        check(self.trend_window >= 2, "trend_window", "an integer >= 2", self.trend_window)


@dataclass(frozen=True)
class SelfModelConfig:
    """Self-modeling auxiliary head (arXiv 2407.10188): predict the model's own hidden state."""

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
        check(self.weight >= 0, "weight", "a float >= 0", self.weight)


@dataclass(frozen=True)
class DreamConfig:
    """Dream cycles: replay of hard real examples mixed with verified self-generated ones."""

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
        for key in ("every", "steps", "buffer_size"):
            check(getattr(self, key) >= 1, key, "an integer >= 1", getattr(self, key))
        check(0 <= self.self_fraction <= 1, "self_fraction", "a float in [0, 1]", self.self_fraction)
        check(self.self_prompts >= 0, "self_prompts", "an integer >= 0", self.self_prompts)
        check(self.temperature >= 0, "temperature", "a float >= 0", self.temperature)


@dataclass(frozen=True)
class TemperatureConfig:
    """Temperature curriculum of the dream cycles' self-generated samples."""

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
        check(self.start >= 0, "start", "a float >= 0", self.start)
        check(self.end >= 0, "end", "a float >= 0", self.end)
        check(self.ramp_steps is None or self.ramp_steps >= 1, "ramp_steps", "an integer >= 1", self.ramp_steps)


QAT_GROUPS = ("attention", "mlp")
"""Module groups (:mod:`forgelib.compress.groups`) BitNet QAT may ternarize; embeddings, lm_head
and norms stay in full precision, as in the BitNet b1.58 paper."""


@dataclass(frozen=True)
class BitNetQATConfig:
    """BitNet b1.58 quantization-aware training (Ma et al. 2024, arXiv 2402.17764)."""

    enabled: bool = doc(
        "Train the chosen linear layers through ternary weights (absmean) and int8 activations with "
        "a straight-through estimator; the saved model holds the ternarized weights.",
        default=False,
    )
    warmup_steps: int = doc(
        "Steps over which the quantization blend lambda ramps linearly from 0 (full precision) to 1 "
        "(the Hugging Face 1.58-bit fine-tuning recipe); 0 quantizes from step 0.",
        default=100,
    )
    modules: tuple[str, ...] = doc(
        f"Module groups whose nn.Linear layers are quantized, from {list(QAT_GROUPS)}; embeddings, "
        "lm_head and norms always stay in full precision.",
        default=QAT_GROUPS,
    )
    quantize_activations: bool = doc(
        "Also fake-quantize the quantized layers' inputs to int8 (per-token absmax) while training. "
        "The saved model is a plain HF model, so its activations run in full precision.",
        default=True,
    )

    def __post_init__(self) -> None:
        check(self.warmup_steps >= 0, "warmup_steps", "an integer >= 0", self.warmup_steps)
        check(len(self.modules) > 0 and set(self.modules) <= set(QAT_GROUPS), "modules",
              f"a non-empty list from {list(QAT_GROUPS)}", list(self.modules))


@dataclass(frozen=True)
class WandbConfig:
    """Optional Weights & Biases logging (dvclive always logs)."""

    project: str | None = doc("Weights & Biases project; unset disables W&B (dvclive is always on).", default=None)
    mode: Literal["online", "offline"] = doc(
        "online or offline (offline writes a local run to sync later with ``wandb sync``).",
        default="offline",
    )

    def __post_init__(self) -> None:
        check(self.project is None or self.project != "", "project", "a non-empty string", self.project)


@dataclass(frozen=True)
class DistributedConfig:
    """Data-parallel training under torchrun (gloo, CPU); see :mod:`forgelib.train.distributed`."""

    nproc: int = doc(
        "Processes the loop runs in. Above 1 the stage re-executes itself under ``torchrun --standalone "
        "--nproc_per_node N``; each process trains on ``batch_size / N`` rows of the same global batch "
        "and gradients are summed, so the update equals the 1-process one up to float summation order. "
        "Dream cycles are off above 1; the other controllers stay consistent across processes.",
        default=1,
    )

    def __post_init__(self) -> None:
        check(self.nproc >= 1, "nproc", "an integer >= 1", self.nproc)


ENHANCEMENTS = ("grokfast", "edge", "geometry", "self_model", "dreams", "temperature")
"""The switchable sub-sections (``--enable-<name>``; ``--enable-all`` turns on every one).
``bitnet`` is not one: it changes the model that ships (ternary weights), not how it learns."""


@dataclass(frozen=True)
class TrainConfig:
    """The Forge loop: AdamW on the evolved model plus switchable controllers (all off by default)."""

    seed: int = doc(
        "Seeds the batch order, the samplers and torch; same seed and params give the same weights.",
        default=0,
    )
    max_steps: int = doc("Optimizer steps of the main loop (dream steps come on top).", default=300)
    batch_size: int = doc("Examples per step.", default=64)
    source: Literal["auto", "split", "generate"] = doc(
        "split: rows of the prepared train split; generate: fresh generator examples at any level "
        "(validation/test prompts excluded); auto: generate when the edge curriculum is on (it needs "
        "levels the prepared split does not hold), split otherwise.",
        default="auto",
    )
    task_weights: dict[str, float] = doc(
        "Relative weight of a task when a batch example picks its task (a task not named weighs "
        "1; empty: every task equally often).",
        default_factory=dict,
    )
    lr: float = doc("Peak learning rate (AdamW).", default=1e-3)
    weight_decay: float = doc("AdamW decoupled weight decay.", default=0.0)
    decay_norms: bool = doc(
        "Weight decay on the RMSNorm gains too; false: matrices only (the Grokfast paper's code "
        "decays every parameter; at weight decay 1.0 the gains would shrink towards 0).",
        default=True,
    )
    betas: tuple[float, float] = doc("AdamW betas (Grokfast paper setup).", default=(0.9, 0.98))
    warmup_steps: int = doc("Linear learning-rate warmup.", default=10)
    lr_schedule: Literal["constant", "cosine"] = doc(
        "After warmup: constant, or cosine decay to 10% of ``lr`` at ``max_steps``.",
        default="constant",
    )
    length_groups: int = doc(
        "Forward passes per step: the batch's rows sorted by length and cut into this many groups, "
        "each padded only to its own longest row (forge_loop.forward_by_length). The loss and its "
        "gradient are the one-pass values up to float rounding; 1: one pass over the padded batch.",
        default=1,
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
    bitnet: BitNetQATConfig = doc("BitNet b1.58 quantization-aware training (ternary linear layers).",
                                  default_factory=BitNetQATConfig)
    distributed: DistributedConfig = doc("Data-parallel training under torchrun.", default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        for key, low in (("seed", 0), ("max_steps", 1), ("batch_size", 1), ("warmup_steps", 0), ("eval_every", 1),
                         ("eval_limit", 1), ("log_every", 1), ("checkpoint_every", 0), ("keep_checkpoints", 1),
                         ("length_groups", 1)):
            check(getattr(self, key) >= low, key, f"an integer >= {low}", getattr(self, key))
        for name, weight in self.task_weights.items():
            check(weight > 0, f"task_weights.{name}", "a float > 0", weight)
        check(self.lr > 0, "lr", "a float > 0", self.lr)
        check(self.weight_decay >= 0, "weight_decay", "a float >= 0", self.weight_decay)
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "two floats in [0, 1)",
              self.betas)
        check(self.grad_clip >= 0, "grad_clip", "a float >= 0", self.grad_clip)
        nproc = self.distributed.nproc
        check(self.batch_size % nproc == 0, "distributed.nproc",
              f"a divisor of batch_size ({self.batch_size}): each process trains on an equal share of the "
              "global batch", nproc)
        if self.bitnet.enabled:
            check(self.bitnet.warmup_steps < self.max_steps, "bitnet.warmup_steps",
                  f"an integer < max_steps ({self.max_steps}), so that the run ends fully ternary",
                  self.bitnet.warmup_steps)

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

