"""Compression settings (the params.yaml ``compress`` section): a codec per tensor group, per stage.

In YAML a codec choice is a mapping ``{codec: NAME, SETTING: VALUE, ...}`` (unset settings take
the codec's defaults). A stage lists the five groups (an omitted group keeps its default) and an
optional ``ladder``: per group, the candidates ``--target-size`` may choose from, largest first.
``CompressConfig.from_dict(raw)`` (or ``forgelib.configtools.from_dict``) parses the section;
every error names its dotted key, e.g. ``compress.stage2.mlp.k: expected a power of two >= 2, got 3``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from forgelib.compress.codecs.registry import config_to_dict, get_codec, make_config
from forgelib.compress.groups import GROUPS
from forgelib.configtools import FieldError, check, doc, from_dict, to_dict

KEEP = "keep"  # stage 2 only: carry the stage-1 payload over unchanged


@dataclass(frozen=True)
class CodecSpec:
    """A parsed codec choice: the codec name and its validated config (``None`` for ``keep``)."""

    codec: str
    config: Any = None

    @classmethod
    def parse(cls, raw: Any, where: str, *, allow_keep: bool) -> "CodecSpec":
        if not isinstance(raw, dict) or "codec" not in raw:
            raise FieldError(where, f"expected a mapping with a 'codec' key, got {raw!r}")
        settings = {k: v for k, v in raw.items() if k != "codec"}
        if raw["codec"] == KEEP:
            check(allow_keep, where, "a codec ('keep' is only valid in stage2)", KEEP)
            check(not settings, where, "no settings with codec 'keep'", sorted(settings))
            return cls(KEEP)
        try:
            get_codec(raw["codec"])
        except Exception as err:
            raise FieldError(f"{where}.codec", str(err)) from None
        return cls(raw["codec"], make_config(raw["codec"], settings, where=where))

    def to_dict(self) -> dict[str, Any]:
        """The effective choice, defaults filled in."""
        return {"codec": self.codec} | (config_to_dict(self.config) if self.config is not None else {})


def _choice(codec: str, **settings: Any) -> dict[str, Any]:
    return {"codec": codec, **settings}


@dataclass(frozen=True)
class StageConfig:
    """One stage's codec per tensor group (see :mod:`forgelib.compress.groups`)."""

    attention: dict[str, Any] = doc("Codec for the q/k/v/o projections.", default_factory=lambda: _choice("fp16"))
    mlp: dict[str, Any] = doc("Codec for the gate/up/down projections.", default_factory=lambda: _choice("fp16"))
    embeddings: dict[str, Any] = doc("Codec for the token embedding table.", default_factory=lambda: _choice("fp16"))
    lm_head: dict[str, Any] = doc("Codec for the output projection (absent when tied).",
                                  default_factory=lambda: _choice("fp16"))
    norms: dict[str, Any] = doc("Codec for norm weights and every other 1-D tensor.", default_factory=lambda: _choice("fp16"))
    ladder: dict[str, tuple[dict[str, Any], ...]] = doc(
        "Per group, candidate codecs for --target-size, largest first (default: the group's codec).",
        default_factory=dict)

    allow_keep = False  # class attribute: only stage 2 may reuse stage-1 payloads

    def __post_init__(self) -> None:
        specs = {g: CodecSpec.parse(getattr(self, g), g, allow_keep=self.allow_keep) for g in GROUPS}
        rungs = {}
        for group, choices in self.ladder.items():
            check(group in GROUPS, f"ladder.{group}", f"a group ({', '.join(GROUPS)})", group)
            check(isinstance(choices, (list, tuple)) and len(choices) > 0, f"ladder.{group}",
                  "a non-empty list of codec choices", choices)
            rungs[group] = tuple(CodecSpec.parse(c, f"ladder.{group}[{i}]", allow_keep=self.allow_keep)
                                 for i, c in enumerate(choices))
        object.__setattr__(self, "_specs", specs)
        object.__setattr__(self, "_rungs", rungs)

    def spec(self, group: str) -> CodecSpec:
        return self._specs[group]

    def rungs(self, group: str) -> tuple[CodecSpec, ...]:
        return self._rungs.get(group) or (self.spec(group),)

    def effective(self) -> dict[str, Any]:
        """Every group's choice and ladder with the codec defaults filled in (for reports)."""
        return {g: self.spec(g).to_dict() for g in GROUPS} | {
            "ladder": {g: [r.to_dict() for r in rungs] for g, rungs in self._rungs.items()}}


_TABLE_LADDER_1 = (_choice("int8"), _choice("seedlm"), _choice("seedlm", C=12, P=4), _choice("bitnet158"))


@dataclass(frozen=True)
class Stage1Config(StageConfig):
    """Stage 1, BitNet + SeedLM: ternary linear layers, LFSR seeds for the embedding tables."""

    attention: dict[str, Any] = doc("Codec for the q/k/v/o projections.", default_factory=lambda: _choice("bitnet158"))
    mlp: dict[str, Any] = doc("Codec for the gate/up/down projections.", default_factory=lambda: _choice("bitnet158"))
    embeddings: dict[str, Any] = doc("Codec for the token embedding table.", default_factory=lambda: _choice("seedlm"))
    lm_head: dict[str, Any] = doc("Codec for the output projection (absent when tied).",
                                  default_factory=lambda: _choice("seedlm"))
    ladder: dict[str, tuple[dict[str, Any], ...]] = doc(
        "Per group, candidate codecs for --target-size, largest first (default: the group's codec).",
        default_factory=lambda: {"embeddings": _TABLE_LADDER_1, "lm_head": _TABLE_LADDER_1})


_VPTQ_LADDER = (  # 'keep' (stage 1's ternary, 1.6 b/w) competes with VPTQ at the same size
    _choice("vptq", v=4, k=256, k_res=16, codebook_bits=8), _choice("vptq", v=4, k=256, codebook_bits=8),
    _choice(KEEP), _choice("vptq", v=6, k=256, codebook_bits=8), _choice("vptq", v=8, k=256, codebook_bits=8),
    _choice("vptq", v=8, k=64, codebook_bits=8), _choice("vptq", v=8, k=16, codebook_bits=8),
    _choice("vptq", v=12, k=16, codebook_bits=8), _choice("vptq", v=16, k=16, codebook_bits=8),
)
_TABLE_LADDER_2 = (
    _choice("hyperfn"), _choice("hyperfn", n_points=256), _choice(KEEP), _choice("hyperfn", n_points=64),
    _choice("vptq", v=4, k=256, codebook_bits=8), _choice("vptq", v=8, k=256, codebook_bits=8),
    _choice("vptq", v=8, k=16, codebook_bits=8),
)


@dataclass(frozen=True)
class Stage2Config(StageConfig):
    """Stage 2 (final), VPTQ + HyperFn: vector-quantized linear layers, winding-line tables."""

    attention: dict[str, Any] = doc("Codec for the q/k/v/o projections ('keep': stage 1's payload).",
                                    default_factory=lambda: _choice("vptq", v=4, k=256, codebook_bits=8))
    mlp: dict[str, Any] = doc("Codec for the gate/up/down projections ('keep': stage 1's payload).",
                              default_factory=lambda: _choice("vptq", v=4, k=256, codebook_bits=8))
    embeddings: dict[str, Any] = doc("Codec for the token embedding table.", default_factory=lambda: _choice("hyperfn"))
    lm_head: dict[str, Any] = doc("Codec for the output projection (absent when tied).",
                                  default_factory=lambda: _choice("hyperfn"))
    ladder: dict[str, tuple[dict[str, Any], ...]] = doc(
        "Per group, candidate codecs for --target-size, largest first (default: the group's codec).",
        default_factory=lambda: {"attention": _VPTQ_LADDER, "mlp": _VPTQ_LADDER, "embeddings": _TABLE_LADDER_2,
                                 "lm_head": _TABLE_LADDER_2, "norms": (_choice("fp16"), _choice("int8"))})

    allow_keep = True


@dataclass(frozen=True)
class HealConfig:
    """Quantization-aware fine-tune of the bitnet158-assigned linear layers (BitLinear + STE)."""

    steps: int = doc("Optimizer steps; 0 disables healing. Needs heal batches from the caller.", default=0)
    lr: float = doc("AdamW learning rate.", default=3e-4)
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
        check(0 <= self.ramp_steps and (self.steps == 0 or self.ramp_steps < self.steps), "ramp_steps",
              f"an integer in [0, steps={self.steps}) so the last steps train at lam = 1", self.ramp_steps)
        check(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)
        check(self.max_grad_norm >= 0, "max_grad_norm", "a number >= 0", self.max_grad_norm)


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
    calibration_batches: int = doc("Calibration batches for the VPTQ Hessians (0: none, uniform weights).",
                                   default=8)
    batch_size: int = doc("Train-split rows per heal step and per calibration batch.", default=64)
    seed: int = doc("Seeds the heal (torch RNG); codecs carry their own seeds.", default=0)

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        check(self.stage2_source in ("fp", "stage1"), "stage2_source", "'fp' or 'stage1'", self.stage2_source)
        check(self.calibration_batches >= 0, "calibration_batches", "an integer >= 0", self.calibration_batches)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, where: str = "compress") -> "CompressConfig":
        return from_dict(cls, raw, where)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def effective(self) -> dict[str, Any]:
        """The configuration with every codec default filled in (what the stats report)."""
        return self.to_dict() | {"stage1": self.stage1.effective(), "stage2": self.stage2.effective()}
