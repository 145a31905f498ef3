"""``quietstar:`` params: Quiet-STaR thought training and its control arms (sft, pause, random_thoughts)."""

from __future__ import annotations

from dataclasses import dataclass

from forgelib.configtools import check, doc
from forgelib.data.tasks import TASKS


@dataclass(frozen=True)
class QuietStarConfig:
    """Every arm starts from the stage's input model and trains the same steps on the same batches."""

    enabled: bool = doc(
        "Continue the DAG from the thinking model: `train` then fine-tunes the seed-0 thoughts "
        "model's weights (its mixing head stays in models/thinking). Off: `train` gets the input "
        "unchanged. Either way the stage measures every arm and ships models/thinking. On by "
        "default only if thoughts beat sft and pause beyond their spread and random thoughts fall "
        "back (`enabled_by_default` in metrics/quietstar.json).", default=False)
    seeds: int = doc("Seeds per arm (0 .. seeds-1); mean and sample std are over them.", default=3)
    steps: int = doc("Optimizer steps of every arm.", default=600)
    lr: float = doc("Peak AdamW learning rate of every arm (warmup, then cosine decay).", default=0.002)
    warmup_steps: int = doc("Linear warmup steps.", default=20)
    batch_size: int = doc("Training rows per step (the thoughts arm samples n_thoughts per row).", default=16)
    thought_tokens: int = doc(
        "Sampled tokens per thought; a thought takes two more positions for its start and end "
        "tokens (the paper's n_ahead counts them too).", default=4)
    n_thoughts: int = doc(
        "Thoughts sampled per answer position; the REINFORCE baseline is their mean reward.", default=2)
    lookahead: int = doc(
        "True answer tokens whose log-likelihood makes the reward (the paper's n_ahead_talk).", default=4)
    temperature: float = doc("Sampling temperature of thoughts during training.", default=1.0)
    policy_weight: float = doc("Weight of the REINFORCE loss next to the NLL losses.", default=1.0)
    task: str = doc("Serial-computation task the arms are trained and tested on (its own suite).", default="long_add")
    level: int = doc("Difficulty level of the task.", default=1)
    data_seed: int = doc("Seed of the task's train/validation/test splits.", default=0)
    n_train: int = doc("Training examples.", default=3000)
    n_val: int = doc("Validation examples.", default=200)
    n_test: int = doc("Test examples (reported figures).", default=300)
    replay_fraction: float = doc(
        "Expected fraction of each training batch drawn from the headline suite's train splits "
        "(data/, evenly over its tasks), the same rows for every arm. 0 by default: on the embedded "
        "default, 0.25 cut sft's validation score on the serial task from 0.22 to 0.07 and still "
        "let the headline mean fall from 0.60 to 0.35; `train` retrains the headline suite anyway.",
        default=0.0)
    eval_batch_size: int = doc("Prompts per batch when evaluating.", default=256)

    def __post_init__(self):
        check(self.seeds >= 2, "seeds", "an integer >= 2 (a spread needs two runs)", self.seeds)
        for key in ("steps", "batch_size", "thought_tokens", "lookahead", "n_train", "n_val", "n_test", "eval_batch_size"):
            check(getattr(self, key) >= 1, key, "an integer >= 1", getattr(self, key))
        check(self.warmup_steps >= 0, "warmup_steps", "an integer >= 0", self.warmup_steps)
        check(self.n_thoughts >= 2, "n_thoughts", "an integer >= 2 (the baseline is a mean over thoughts)", self.n_thoughts)
        check(self.lr > 0, "lr", "a float > 0", self.lr)
        check(self.temperature > 0, "temperature", "a float > 0", self.temperature)
        check(self.policy_weight >= 0, "policy_weight", "a float >= 0", self.policy_weight)
        check(0 <= self.replay_fraction < 1, "replay_fraction", "a float in [0, 1)", self.replay_fraction)
        check(self.task in TASKS, "task", f"a task among {', '.join(TASKS)}", self.task)
        if self.task in TASKS:
            top = TASKS[self.task].max_level
            check(1 <= self.level <= top, "level", f"a level in 1..{top}", self.level)

    def replay_rows(self, serial_rows: int) -> int:
        """Headline rows to add to ``serial_rows`` train rows so that they make ``replay_fraction`` of the mix."""
        return round(serial_rows * self.replay_fraction / (1 - self.replay_fraction))

    def pause_tokens(self) -> int:
        """Filler tokens of the pause arm: as many positions as a thought takes (issue 12)."""
        return self.thought_tokens + 2
