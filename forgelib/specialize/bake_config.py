"""``specialize.bake:`` params: which prefix is baked into the weights, and how (Bhargava et al. 2024)."""

from __future__ import annotations

from dataclasses import dataclass

from forgelib.configtools import check, doc

LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Llama's attention and MLP projections: every linear layer of a block."""


@dataclass(frozen=True)
class BakeConfig:
    """Prompt baking: choose a prefix that helps on validation, then distil it into a merged LoRA."""

    enabled: bool = doc("Run prompt baking in the specialize stage.", default=True)
    target: str = doc(
        "What the prefix is for: a task name, a family name, or auto (every family is tried and the "
        "one whose best prefix gains most on validation is baked).", default="auto")
    shots: tuple[int, ...] = doc(
        "k-shot candidates: for each k, prefixes of k solved train examples of the target in its "
        "own format (prompt, answer, separator), e.g. '12+34=46 ' before '5+7='.", default=(1, 2, 3))
    draws: int = doc("Different random draws of train examples per k.", default=1)
    separator: str = doc("Text after each k-shot example (must tokenize without <unk>).", default=" ")
    instructions: tuple[str, ...] = doc(
        "Instruction prefixes tried as candidates as they are (include any trailing separator).",
        default=())
    min_gain: float = doc(
        "A prefix helps when prompted minus unprompted validation exact match reaches this; the "
        "best candidate is baked and measured either way, and the metrics say whether it helped.",
        default=0.05)
    bake_unhelpful: bool = doc(
        "Merge the baked LoRA into the output model even when the chosen prefix does not reach "
        "min_gain. Off: such a prefix has nothing worth baking, so the output weights are the "
        "input's (the bake is still run and reported).", default=False)
    selection_limit: int | None = doc(
        "Validation rows per task used to choose the prefix (null: all).", default=None)
    prompts: int = doc("Train-split inputs x of the target that trajectories are sampled for.", default=512)
    trajectories: int = doc("Answers sampled from the prompted model per input x.", default=2)
    temperature: float = doc(
        "Sampling temperature of those trajectories (the reference code uses 2: hotter samples visit "
        "positions greedy answers never reach, and the student learns the teacher there too).", default=2.0)
    rank: int = doc("LoRA rank of the baked adapter.", default=8)
    alpha: float = doc("LoRA alpha (the update is scaled by alpha / rank).", default=16.0)
    modules: tuple[str, ...] = doc("Module names the LoRA adapts.", default=LORA_MODULES)
    steps: int = doc("Optimizer steps of baking.", default=200)
    lr: float = doc("Peak AdamW learning rate (linear warmup, cosine decay).", default=3e-3)
    warmup_steps: int = doc("Warmup steps of the learning rate.", default=20)
    batch_size: int = doc("Trajectories per optimizer step.", default=32)
    curve_points: int = doc(
        "Points of the half-baking curve (unprompted validation exact match against steps, from "
        "step 0 to the last step, evenly spaced).", default=6)
    eval_limit: int | None = doc("Test rows per task for the reported figures (null: all).", default=None)
    drift_limit: int = doc("Test prompts per off-target task on which drift KL is measured.", default=100)
    eval_batch_size: int = doc("Rows per forward pass when scoring and generating.", default=256)

    def __post_init__(self):
        check(bool(self.target.strip()), "target", "a task name, a family name or auto", self.target)
        check(len(self.shots) + len(self.instructions) >= 1, "shots",
              "at least one k (or at least one instruction)", self.shots)
        check(all(k >= 1 for k in self.shots), "shots", "integers >= 1", self.shots)
        check(self.draws >= 1, "draws", "an integer >= 1", self.draws)
        check(len(self.separator) >= 1, "separator", "a non-empty string", self.separator)
        check(all(s for s in self.instructions), "instructions", "non-empty strings", self.instructions)
        check(0.0 <= self.min_gain <= 1.0, "min_gain", "a number in [0, 1]", self.min_gain)
        check(self.selection_limit is None or self.selection_limit >= 1, "selection_limit",
              "null or an integer >= 1", self.selection_limit)
        check(self.prompts >= 1, "prompts", "an integer >= 1", self.prompts)
        check(self.trajectories >= 1, "trajectories", "an integer >= 1", self.trajectories)
        check(self.temperature > 0.0, "temperature", "a number > 0", self.temperature)
        check(self.rank >= 1, "rank", "an integer >= 1", self.rank)
        check(self.alpha > 0.0, "alpha", "a number > 0", self.alpha)
        check(len(self.modules) >= 1 and all(self.modules), "modules", "a non-empty list of module names", self.modules)
        check(self.steps >= 1, "steps", "an integer >= 1", self.steps)
        check(self.lr > 0.0, "lr", "a number > 0", self.lr)
        check(0 <= self.warmup_steps <= self.steps, "warmup_steps", f"an integer in [0, steps={self.steps}]",
              self.warmup_steps)
        check(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        check(2 <= self.curve_points <= self.steps + 1, "curve_points",
              f"an integer in [2, steps + 1 = {self.steps + 1}]", self.curve_points)
        check(self.eval_limit is None or self.eval_limit >= 1, "eval_limit", "null or an integer >= 1", self.eval_limit)
        check(self.drift_limit >= 1, "drift_limit", "an integer >= 1", self.drift_limit)
        check(self.eval_batch_size >= 1, "eval_batch_size", "an integer >= 1", self.eval_batch_size)

    def curve_steps(self) -> list[int]:
        """Steps at which the half-baking curve is measured: 0, ..., steps, evenly spaced."""
        n = self.curve_points - 1
        return sorted({round(i * self.steps / n) for i in range(n + 1)})
