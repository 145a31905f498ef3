"""``specialize:`` params: SVF experts, their baselines, the dispatcher, few-shot mixing, and baking.

The defaults were chosen on validation accuracy of the embedded default (``models/trained``), with
the stage's 5-minute CPU budget in mind; ``README``/the stage report the measured figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from forgelib.configtools import check, doc
from forgelib.specialize.bake_config import BakeConfig

METHODS = ("ce", "reinforce")


@dataclass(frozen=True)
class LoRABaselineConfig:
    """The rank-r ``peft`` LoRA on the SVF matrices, trained at the experts' data and steps."""

    enabled: bool = doc("Train and report the LoRA baseline for every family.", default=True)
    rank: int = doc("LoRA rank.", default=4)
    alpha: float = doc("LoRA alpha (the update is scaled by alpha / rank).", default=8.0)
    lr_grid: tuple[float, ...] = doc(
        "Peak learning rates tried; the one with the best validation exact match is reported on test.",
        default=(1e-3, 3e-3, 1e-2))

    def __post_init__(self):
        check(self.rank >= 1, "rank", "an integer >= 1", self.rank)
        check(self.alpha > 0, "alpha", "a number > 0", self.alpha)
        check(len(self.lr_grid) >= 1 and all(lr > 0 for lr in self.lr_grid), "lr_grid",
              "a non-empty list of numbers > 0", self.lr_grid)


@dataclass(frozen=True)
class FullFTConfig:
    """A full fine-tune of every parameter at the experts' data and steps: the upper reference."""

    enabled: bool = doc("Train and report the full fine-tune for every family.", default=True)
    lr: float = doc("Peak learning rate (1e-3 beat 3e-4 on arithmetic validation at 100 steps).", default=1e-3)

    def __post_init__(self):
        check(self.lr > 0, "lr", "a number > 0", self.lr)


@dataclass(frozen=True)
class DispatchConfig:
    """The SVF classification expert: z trained so the model emits the family's label after a prompt."""

    steps: int = doc("Optimizer steps of the classification expert.", default=100)
    lr: float = doc(
        "Its peak learning rate (validation dispatch accuracy at 100 steps on the embedded default: "
        "0.979, 0.993, 0.979, 0.998, 0.996 for 0.03, 0.1, 0.3, 1, 3).", default=1.0)
    rows_per_family: int = doc("Train rows per family in its data (balanced across families).", default=512)

    def __post_init__(self):
        check(self.steps >= 1, "steps", "an integer >= 1", self.steps)
        check(self.lr > 0, "lr", "a number > 0", self.lr)
        check(self.rows_per_family >= 1, "rows_per_family", "an integer >= 1", self.rows_per_family)


@dataclass(frozen=True)
class MixingConfig:
    """Few-shot adaptation: CEM over mixing weights ``a_k`` of ``z' = sum a_k z_k`` on a composite task."""

    enabled: bool = doc("Run and report few-shot mixing.", default=True)
    task: str = doc("A task outside the suite that no expert was trained on (forgelib/data/tasks/composite.py).",
                    default="sort_reverse")
    level: int = doc("Its difficulty level.", default=1)
    shots: int = doc("Examples CEM scores each candidate on (the paper uses 3 to 20).", default=24)
    test_examples: int = doc("Held-out examples (disjoint from the shots) the result is reported on.", default=300)
    population: int = doc("CEM population per iteration (reference: 32).", default=32)
    elite_fraction: float = doc("Fraction of the population whose mean and std make the next sampler (reference: 0.2).",
                                default=0.2)
    iterations: int = doc("CEM iterations.", default=8)

    def __post_init__(self):
        from forgelib.data.tasks import TASKS

        check(self.task in TASKS, "task", f"a task among {', '.join(TASKS)}", self.task)
        check(1 <= self.level <= TASKS[self.task].max_level, "level",
              f"a level in 1..{TASKS[self.task].max_level}", self.level)
        check(self.shots >= 1, "shots", "an integer >= 1", self.shots)
        check(self.test_examples >= 1, "test_examples", "an integer >= 1", self.test_examples)
        check(self.population >= 2, "population", "an integer >= 2", self.population)
        check(0 < self.elite_fraction <= 1 and self.elite_fraction * self.population >= 1, "elite_fraction",
              "a fraction in (0, 1] with at least one elite (elite_fraction * population >= 1)", self.elite_fraction)
        check(self.iterations >= 1, "iterations", "an integer >= 1", self.iterations)


@dataclass(frozen=True)
class SVFConfig:
    """Transformer² SVF experts (one per task family), their baselines, dispatch and mixing."""

    enabled: bool = doc("Train SVF experts and ship them beside the weights (off: the svf block is null).",
                        default=True)
    method: str = doc(
        "How the shipped experts are trained: ce (teacher-forced answer loss through W') or reinforce "
        "(the paper's +1/-1 exact-match reward on sampled answers). ce is the default: on the embedded "
        "default at 150 steps its validation exact match beat reinforce's on every family (arithmetic "
        "0.815 vs 0.785, logic 0.533 vs 0.490, modular 0.123 vs 0.043, string 0.978 vs 0.977) in half "
        "the time (no sampling). The data carry exact answers to imitate, and where the model is mostly "
        "wrong (modular) the -1 rewards mostly push probability away from its own samples.",
        default="ce")
    compare_methods: bool = doc("Also train the other method and report both on validation and test.",
                                default=True)
    max_mult: float = doc(
        "m = sigmoid(z) * max_mult. With the paper's rescaling by sum s / sum(s*m) a common factor of m "
        "cancels, so max_mult does not change W'; it is kept because the side files record the "
        "parametrisation.", default=2.0)
    steps: int = doc("Optimizer steps per expert; every baseline trains for the same number.", default=150)
    batch_size: int = doc(
        "Rows per step (reinforce: batch_size // samples prompts, samples answers each: as many rows).",
        default=64)
    lr: float = doc("Peak AdamW learning rate of the z vectors (0.03 was best of 0.01/0.03/0.1 on validation).",
                    default=0.03)
    warmup_steps: int = doc("Linear warmup steps, then cosine decay (every method).", default=10)
    grad_clip: float = doc("Gradient-norm clip (every method).", default=1.0)
    samples: int = doc("reinforce: answers sampled per prompt.", default=2)
    temperature: float = doc("reinforce: sampling temperature.", default=1.0)
    kl_coef: float = doc("reinforce: weight of KL(base || adapted) on the sampled tokens (reference: 0).",
                         default=0.0)
    eval_batch_size: int = doc("Rows per forward pass when scoring and generating.", default=256)
    lora: LoRABaselineConfig = doc("The LoRA baseline.", default_factory=LoRABaselineConfig)
    full_ft: FullFTConfig = doc("The full fine-tune baseline.", default_factory=FullFTConfig)
    dispatch: DispatchConfig = doc("The classification expert.", default_factory=DispatchConfig)
    mixing: MixingConfig = doc("Few-shot mixing on a composite task.", default_factory=MixingConfig)

    def __post_init__(self):
        check(self.method in METHODS, "method", f"one of {', '.join(METHODS)}", self.method)
        check(self.max_mult > 0, "max_mult", "a number > 0", self.max_mult)
        check(self.steps >= 1, "steps", "an integer >= 1", self.steps)
        check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        check(self.lr > 0, "lr", "a number > 0", self.lr)
        check(0 <= self.warmup_steps <= self.steps, "warmup_steps", f"an integer in [0, steps={self.steps}]",
              self.warmup_steps)
        check(self.grad_clip > 0, "grad_clip", "a number > 0", self.grad_clip)
        check(1 <= self.samples <= self.batch_size, "samples", f"an integer in [1, batch_size={self.batch_size}]",
              self.samples)
        check(self.temperature > 0, "temperature", "a number > 0", self.temperature)
        check(self.kl_coef >= 0, "kl_coef", "a number >= 0", self.kl_coef)
        check(self.eval_batch_size >= 1, "eval_batch_size", "an integer >= 1", self.eval_batch_size)

    def methods(self) -> tuple[str, ...]:
        """The methods trained: the shipped one first, then the other when compared."""
        return (self.method, *(m for m in METHODS if m != self.method and self.compare_methods))


@dataclass(frozen=True)
class SpecializeConfig:
    """The ``specialize`` stage: bake a prompt into the weights, then add SVF experts beside them."""

    seed: int = doc("Seed of every sampled batch, trajectory and CEM draw.", default=0)
    svf: SVFConfig = doc("SVF experts (Transformer²).", default_factory=SVFConfig)
    bake: BakeConfig = doc("Prompt baking (forgelib/specialize/bake_config.py).", default_factory=BakeConfig)
