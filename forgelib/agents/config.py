"""``agents:`` params: tools over MCP, the surprise-gated memory, and the ADAS search."""

from __future__ import annotations

from dataclasses import dataclass

from forgelib.configtools import check, doc


@dataclass(frozen=True)
class ToolArmsConfig:
    """How the tool model is trained and the arms are measured."""

    seed: int = doc("Seed of the generated rows, the batch order and the wrong tool.", default=0)
    steps: int = doc("Fine-tuning steps of the tool model and of its no-tool twin (each).", default=800)
    lr: float = doc("Peak learning rate (AdamW, warmup then cosine decay).", default=1e-3)
    batch_size: int = doc("Rows per step.", default=64)
    n_generated: int = doc("Generated 2-digit products in the training rows.", default=3000)
    n_test: int = doc("Rows per generated test set (2-digit mul; 3- and 4-digit add and mul).", default=200)
    replay_fraction: float = doc("Share of training rows taken from the other tasks (direct answers).", default=0.25)
    eval_batch_size: int = doc("Rows per generation batch.", default=256)

    def __post_init__(self):
        for key in ("steps", "batch_size", "n_generated", "n_test", "eval_batch_size"):
            check(getattr(self, key) >= 1, key, "an integer >= 1", getattr(self, key))
        check(self.lr > 0, "lr", "a float > 0", self.lr)
        check(0 <= self.replay_fraction < 1, "replay_fraction", "a float in [0, 1)", self.replay_fraction)


@dataclass(frozen=True)
class MemoryConfig:
    """The surprise-gated episodic memory's arms (:mod:`forgelib.agents.memory_arms`)."""

    enabled: bool = doc("Measure the memory arms (on, off, write_all, random_writes).", default=True)
    seeds: list[int] = doc("Seeds of the fine-tune and of the test episodes; std is taken over them.",
                           default_factory=lambda: [0, 1, 2])
    distances: list[int] = doc("Characters between a fact and its query in the test streams (the model's "
                               "window is 51 characters at 64 positions).", default_factory=lambda: [16, 48, 128, 512])
    episodes_per_distance: int = doc("Test episodes per distance and seed.", default=200)
    n_facts: int = doc("Facts per stream.", default=12)
    budget: int = doc("Memory slots, and writes of the gated and random arms (< n_facts: the gate must choose).",
                      default=4)
    finetune_steps: int = doc("Steps teaching a copy of the model to answer from a retrieved fact.", default=800)

    def __post_init__(self):
        check(len(self.seeds) >= 1, "seeds", "a non-empty list of integers", self.seeds)
        check(len(self.distances) >= 1 and min(self.distances) >= 1, "distances", "a non-empty list of integers >= 1",
              self.distances)
        check(self.episodes_per_distance >= 1, "episodes_per_distance", "an integer >= 1", self.episodes_per_distance)
        check(self.n_facts >= 2, "n_facts", "an integer >= 2", self.n_facts)
        check(1 <= self.budget < self.n_facts, "budget", f"an integer in [1, n_facts - 1 = {self.n_facts - 1}]",
              self.budget)
        check(self.finetune_steps >= 0, "finetune_steps", "an integer >= 0", self.finetune_steps)


@dataclass(frozen=True)
class AdasConfig:
    """The search over agent designs (:mod:`forgelib.agents.adas`)."""

    enabled: bool = doc("Run the ADAS search.", default=True)
    generations: int = doc("Generations of proposals after the hand-written seeds.", default=6)
    proposals_per_generation: int = doc("Designs proposed (mutation or crossover) per generation.", default=8)
    call_penalty: float = doc("Fitness cost per model call per item (fitness = bootstrap median of validation "
                              "accuracy minus this times the mean calls).", default=0.005)
    resamples: int = doc("Bootstrap resamples of the validation items.", default=200)
    validation_per_task: int = doc("Validation items per task the designs are scored on.", default=24)
    test_per_task: int = doc("Test items per task of the final comparison (null: the whole split).", default=None)
    memory_per_task: int = doc("Training examples per task in the memory MemoryLookup reads.", default=200)
    max_new_tokens: int = doc("Tokens per generated answer.", default=12)

    def __post_init__(self):
        check(self.generations >= 0, "generations", "an integer >= 0", self.generations)
        check(self.proposals_per_generation >= 1, "proposals_per_generation", "an integer >= 1",
              self.proposals_per_generation)
        check(self.call_penalty >= 0, "call_penalty", "a float >= 0", self.call_penalty)
        check(self.resamples >= 1, "resamples", "an integer >= 1", self.resamples)
        check(self.validation_per_task >= 1, "validation_per_task", "an integer >= 1", self.validation_per_task)
        check(self.test_per_task is None or self.test_per_task >= 1, "test_per_task", "null or an integer >= 1",
              self.test_per_task)
        check(self.memory_per_task >= 1, "memory_per_task", "an integer >= 1", self.memory_per_task)
        check(self.max_new_tokens >= 1, "max_new_tokens", "an integer >= 1", self.max_new_tokens)


@dataclass(frozen=True)
class AgentsConfig:
    """The ``agents`` stage: a tool-trained model (MCP calculator), the memory arms and ADAS."""

    seed: int = doc("Seed of the ADAS search.", default=0)
    tools: ToolArmsConfig = doc("Tool-use training and the tool arms (forgelib/agents/tool_arms.py).",
                                default_factory=ToolArmsConfig)
    memory: MemoryConfig = doc("The surprise-gated memory's arms.", default_factory=MemoryConfig)
    adas: AdasConfig = doc("The search over agent designs.", default_factory=AdasConfig)
