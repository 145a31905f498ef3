"""``compress:`` params: a codec per tensor group, per stage, plus the heal, calibration and refit.

A group's codec is a :class:`CodecSpec`: a codec of the registry (or ``keep``) and that codec's
own validated config dataclass. In YAML it is one flat mapping ``{codec: NAME, SETTING: VALUE,
...}``; unset settings take the codec's defaults. A stage lists the five groups (an omitted group
keeps its default) and an optional ``ladder``: per group, the candidates ``--target-size`` may
choose from, largest first. The pipeline reads these dataclasses as they are; every parse error
names its dotted key, e.g. ``compress.stage2.attention.codebook_bits: expected 8 or 16, got 3``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from forgelib.compress.codecs.registry import CODECS, REGISTRY, config_to_dict, get_codec, make_config
from forgelib.compress.groups import GROUPS
from forgelib.configtools import FieldError, check, doc, field_docs
from forgelib.errors import ForgeError
from forgelib.train.schedule import SCHEDULES

KEEP = "keep"  # stage 2 only: carry the stage-1 payload over unchanged


@dataclass(frozen=True)
class CodecSpec:
    """One tensor group's codec: its registry name and its settings (``None`` for ``keep``).

    Build one with :meth:`of` (``CodecSpec.of("vptq", v=4, k=256)``) or, from YAML, with
    :meth:`from_params`; :meth:`to_params` gives the flat mapping back with every default filled in.
    """

    codec: str = doc(f"A codec of the registry ({', '.join(REGISTRY)}), or 'keep' in stage 2.")
    settings: Any = doc("The codec's config dataclass (e.g. VPTQConfig); None for 'keep'.", default=None)

    def __post_init__(self) -> None:
        if self.codec == KEEP:
            check(self.settings is None, "settings", "no settings with codec 'keep'", self.settings)
            return
        if self.codec not in REGISTRY:
            raise FieldError("codec", f"unknown codec {self.codec!r}; valid codecs: {', '.join(REGISTRY)}")
        config_type = REGISTRY[self.codec].config_type
        check(isinstance(self.settings, config_type), "settings", f"a {config_type.__name__}", self.settings)

    @classmethod
    def of(cls, codec: str, **settings: Any) -> "CodecSpec":
        """``codec`` with ``settings`` (the rest at the codec's defaults)."""
        if codec == KEEP:
            check(not settings, "settings", "no settings with codec 'keep'", sorted(settings))
            return cls(KEEP)
        return cls(codec, make_config(codec, settings))

    @classmethod
    def from_params(cls, raw: Any, path: str) -> "CodecSpec":
        """Parse the YAML form ``{codec: NAME, SETTING: VALUE, ...}`` found at ``path``."""
        if not isinstance(raw, dict):
            raise ForgeError(f"{path}: expected a mapping, got {raw!r}")
        if "codec" not in raw:
            raise ForgeError(f"{path}: expected a mapping with a 'codec' key, got {raw!r}")
        settings = {k: v for k, v in raw.items() if k != "codec"}
        if raw["codec"] == KEEP:
            if settings:
                raise ForgeError(f"{path}: expected no settings with codec 'keep', got {sorted(settings)!r}")
            return cls(KEEP)
        try:
            get_codec(raw["codec"])
        except ForgeError as err:
            raise ForgeError(f"{path}.codec: {err}") from None
        try:
            return cls(raw["codec"], make_config(raw["codec"], settings, where=path))
        except FieldError as err:  # make_config's field already carries the path
            raise ForgeError(str(err)) from None

    def to_params(self) -> dict[str, Any]:
        """The flat YAML form, every setting included."""
        return {"codec": self.codec} | (config_to_dict(self.settings) if self.settings is not None else {})


_of = CodecSpec.of


def codec_setting_docs() -> list[tuple[str, str, Any]]:
    """(key, help, default) of every codec's settings: the keys a ``{codec: NAME, ...}`` mapping
    may add, for ``forge validate --explain`` (``field_docs`` lists a codec choice as one key)."""
    return [(f"compress.<stage>.<group>.{key} (codec {codec.name})", text, default)
            for codec in CODECS for key, text, default in field_docs(codec.config_type)]

@dataclass(frozen=True)
class StageConfig:
    """One stage's codec per tensor group (see :mod:`forgelib.compress.groups`)."""

    attention: CodecSpec = doc("Codec for the q/k/v/o projections.", default_factory=lambda: _of("fp16"))
    mlp: CodecSpec = doc("Codec for the gate/up/down projections.", default_factory=lambda: _of("fp16"))
    embeddings: CodecSpec = doc("Codec for the token embedding table.", default_factory=lambda: _of("fp16"))
    lm_head: CodecSpec = doc("Codec for the output projection (absent when tied).", default_factory=lambda: _of("fp16"))
    norms: CodecSpec = doc("Codec for norm weights and every other 1-D tensor.", default_factory=lambda: _of("fp16"))
    ladder: dict[str, tuple[CodecSpec, ...]] = doc(
        "Per group, candidate codecs for --target-size, largest first (default: the group's codec).",
        default_factory=dict)

    def __post_init__(self) -> None:
        for group, rungs in self.ladder.items():
            check(group in GROUPS, f"ladder.{group}", f"a group ({', '.join(GROUPS)})", group)
            check(len(rungs) > 0, f"ladder.{group}", "a non-empty list of codec choices", rungs)

    def spec(self, group: str) -> CodecSpec:
        """The codec of ``group``."""
        return getattr(self, group)

    def rungs(self, group: str) -> tuple[CodecSpec, ...]:
        """``group``'s ladder for ``--target-size``; without one, its codec alone."""
        return self.ladder.get(group) or (self.spec(group),)


_TABLE_LADDER_1 = (_of("int8"), _of("seedlm"), _of("seedlm", C=12, P=4), _of("bitnet158"))


@dataclass(frozen=True)
class Stage1Config(StageConfig):
    """Stage 1, BitNet + SeedLM: ternary linear layers, LFSR seeds for the embedding tables."""

    attention: CodecSpec = doc("Codec for the q/k/v/o projections.", default_factory=lambda: _of("bitnet158"))
    mlp: CodecSpec = doc("Codec for the gate/up/down projections.", default_factory=lambda: _of("bitnet158"))
    embeddings: CodecSpec = doc("Codec for the token embedding table.", default_factory=lambda: _of("seedlm"))
    lm_head: CodecSpec = doc("Codec for the output projection (absent when tied).", default_factory=lambda: _of("seedlm"))
    ladder: dict[str, tuple[CodecSpec, ...]] = doc(
        "Per group, candidate codecs for --target-size, largest first (default: the group's codec).",
        default_factory=lambda: {"embeddings": _TABLE_LADDER_1, "lm_head": _TABLE_LADDER_1})

    def __post_init__(self) -> None:
        super().__post_init__()
        stage1_only = "a codec ('keep' is only valid in stage2)"
        for group in GROUPS:
            check(self.spec(group).codec != KEEP, group, stage1_only, KEEP)
        for group, rungs in self.ladder.items():
            for i, rung in enumerate(rungs):
                check(rung.codec != KEEP, f"ladder.{group}[{i}]", stage1_only, KEEP)


_VPTQ_LADDER = (  # 'keep' (stage 1's ternary, 1.6 b/w) competes with VPTQ at the same size
    _of("vptq", v=4, k=256, k_res=16, codebook_bits=8), _of("vptq", v=4, k=256, codebook_bits=8),
    _of(KEEP), _of("vptq", v=6, k=256, codebook_bits=8), _of("vptq", v=8, k=256, codebook_bits=8),
    _of("vptq", v=8, k=64, codebook_bits=8), _of("vptq", v=8, k=16, codebook_bits=8),
    _of("vptq", v=12, k=16, codebook_bits=8), _of("vptq", v=16, k=16, codebook_bits=8),
)
_TABLE_LADDER_2 = (
    _of("hyperfn"), _of("hyperfn", n_points=256), _of(KEEP), _of("hyperfn", n_points=64),
    _of("vptq", v=4, k=256, codebook_bits=8), _of("vptq", v=8, k=256, codebook_bits=8),
    _of("vptq", v=8, k=16, codebook_bits=8),
)


@dataclass(frozen=True)
class Stage2Config(StageConfig):
    """Stage 2 (final), VPTQ + HyperFn: vector-quantized linear layers, winding-line tables."""

    attention: CodecSpec = doc("Codec for the q/k/v/o projections ('keep': stage 1's payload).",
                               default_factory=lambda: _of("vptq", v=4, k=256, codebook_bits=8))
    mlp: CodecSpec = doc("Codec for the gate/up/down projections ('keep': stage 1's payload).",
                         default_factory=lambda: _of("vptq", v=4, k=256, codebook_bits=8))
    embeddings: CodecSpec = doc("Codec for the token embedding table.", default_factory=lambda: _of("hyperfn"))
    lm_head: CodecSpec = doc("Codec for the output projection (absent when tied).", default_factory=lambda: _of("hyperfn"))
    ladder: dict[str, tuple[CodecSpec, ...]] = doc(
        "Per group, candidate codecs for --target-size, largest first (default: the group's codec).",
        default_factory=lambda: {"attention": _VPTQ_LADDER, "mlp": _VPTQ_LADDER, "embeddings": _TABLE_LADDER_2,
                                 "lm_head": _TABLE_LADDER_2, "norms": (_of("fp16"), _of("int8"))})


@dataclass(frozen=True)
class HealConfig:
    """Quantization-aware fine-tune of the bitnet158-assigned linear layers (BitLinear + STE)."""

    steps: int = doc("Optimizer steps; 0 disables healing. Needs heal batches from the caller.", default=0)
    lr: float = doc("AdamW learning rate (the peak, under lr_schedule).", default=3e-4)
    lr_schedule: str = doc("constant, or cosine: decay from lr to a tenth of it over the steps "
                           "(forgelib.train.schedule.learning_rate, no warmup).", default="constant")
    ramp_steps: int = doc("Steps over which lam = min(step/ramp_steps, 1) blends quantization in (0: at once).",
                          default=0)
    weight_decay: float = doc("AdamW weight decay.", default=0.0)
    max_grad_norm: float = doc("Gradient clipping norm (0 disables).", default=1.0)
    quantize_activations: bool = doc(
        "Also fake-quantize linear inputs to int8 per token while healing (BitNet W1.58A8). The "
        "shipped container runs with fp activations, so a heal with this on optimises a model that "
        "is not the one evaluated.", default=False)

    def __post_init__(self) -> None:
        check(self.steps >= 0, "steps", "an integer >= 0", self.steps)
        check(self.lr > 0, "lr", "a number > 0", self.lr)
        check(self.lr_schedule in SCHEDULES, "lr_schedule", f"one of {', '.join(SCHEDULES)}", self.lr_schedule)
        check(0 <= self.ramp_steps and (self.steps == 0 or self.ramp_steps < self.steps), "ramp_steps",
              f"an integer in [0, steps={self.steps}) so the last steps train at lam = 1", self.ramp_steps)
        check(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)
        check(self.max_grad_norm >= 0, "max_grad_norm", "a number >= 0", self.max_grad_norm)


@dataclass(frozen=True)
class RefitConfig:
    """Refit of a specialized input's SVF experts on each container's decoded weights.

    Defaults are the specialize stage's (``specialize.svf`` and ``specialize.svf.dispatch``):
    the same loop and rows, started from the carried z vectors instead of z = 0. The batches'
    order is drawn from ``compress.seed``."""

    enabled: bool = doc(
        "Refit the carried experts and dispatcher on each container's decoded weights, then ship them only "
        "if the adapted model beats the plain one on validation (off: the experts are carried unchanged).",
        default=True)
    steps: int = doc("Optimizer steps per family expert (specialize.svf.steps).", default=150)
    lr: float = doc("Peak AdamW learning rate of the family experts' z (specialize.svf.lr).", default=0.03)
    batch_size: int = doc("Train rows per step, experts and dispatcher (specialize.svf.batch_size).", default=64)
    warmup_steps: int = doc("Linear warmup steps, then cosine decay (specialize.svf.warmup_steps).", default=10)
    grad_clip: float = doc("Gradient-norm clip (specialize.svf.grad_clip).", default=1.0)
    dispatch_steps: int = doc("Optimizer steps of the dispatcher (specialize.svf.dispatch.steps).", default=100)
    dispatch_lr: float = doc("Peak learning rate of the dispatcher's z (specialize.svf.dispatch.lr).", default=1.0)
    dispatch_rows_per_family: int = doc(
        "Train rows per family in the dispatcher's data (specialize.svf.dispatch.rows_per_family).", default=512)

    def __post_init__(self) -> None:
        check(self.steps >= 1, "steps", "an integer >= 1", self.steps)
        check(self.lr > 0, "lr", "a number > 0", self.lr)
        check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        check(0 <= self.warmup_steps <= self.steps, "warmup_steps", f"an integer in [0, steps={self.steps}]",
              self.warmup_steps)
        check(self.grad_clip > 0, "grad_clip", "a number > 0", self.grad_clip)
        check(self.dispatch_steps >= 1, "dispatch_steps", "an integer >= 1", self.dispatch_steps)
        check(self.dispatch_lr > 0, "dispatch_lr", "a number > 0", self.dispatch_lr)
        check(self.dispatch_rows_per_family >= 1, "dispatch_rows_per_family", "an integer >= 1",
              self.dispatch_rows_per_family)


@dataclass(frozen=True)
class CompressConfig:
    """The ``compress`` section: two stages of codec assignments, healing, calibration."""

    stage1: Stage1Config = doc("Stage 1 codec per group (BitNet + SeedLM by default).", default_factory=Stage1Config)
    stage2: Stage2Config = doc("Stage 2 (final) codec per group (VPTQ + HyperFn by default).",
                               default_factory=Stage2Config)
    stage2_source: Literal["fp", "stage1"] = doc(
        "What stage 2 encodes: 'stage1', stage 1's output (its decoded weights; Agent Forge's chain, "
        "so errors compound); 'fp', the input model's full-precision weights (before any healing).",
        default="stage1")
    heal: HealConfig = doc("Optional quantization-aware heal after ternarization.", default_factory=HealConfig)
    calibration_batches: int = doc("Calibration batches for the VPTQ/GPTQ Hessians (0: none, uniform weights).",
                                   default=8)
    calibration: Literal["tasks", "code"] = doc(
        "Calibration text: 'tasks', train-split rows of the task suite; 'code', windows of "
        "calibration_seq_len tokens of Python standard-library source, from files disjoint from "
        "`forge eval --benchmark codeppl`'s (for a model whose capability to keep is coding).",
        default="tasks")
    calibration_seq_len: int = doc("Tokens per window with calibration: code.", default=512)
    batch_size: int = doc("Train-split rows per heal step and per calibration batch.", default=64)
    seed: int = doc("Seeds the heal (torch RNG); codecs carry their own seeds.", default=0)
    refit: RefitConfig = doc("Refit of a specialized input's SVF experts on the decoded weights.",
                             default_factory=RefitConfig)

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        check(self.stage2_source in ("fp", "stage1"), "stage2_source", "'fp' or 'stage1'", self.stage2_source)
        check(self.calibration_batches >= 0, "calibration_batches", "an integer >= 0", self.calibration_batches)
        check(self.calibration in ("tasks", "code"), "calibration", "'tasks' or 'code'", self.calibration)
        check(self.calibration_seq_len >= 2, "calibration_seq_len", "an integer >= 2", self.calibration_seq_len)
