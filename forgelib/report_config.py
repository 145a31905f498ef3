"""``report:`` and ``gates:`` params: what the `report` stage aggregates, and the claims it checks.

Both sections are read by the `report` stage alone (:mod:`forgelib.report`), so they live in a
module of their own: editing a gate's help text reruns that stage and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from forgelib.configtools import check, doc

PHASES = ("prepare", "base", "evomerge", "quietstar", "train", "specialize", "agents", "compress")
"""Stages that write ``metrics/<phase>.json`` for the report."""


def _check_unit(obj, *names: str) -> None:
    for name in names:
        check(0 <= getattr(obj, name) <= 1, name, "a float in [0, 1]", getattr(obj, name))


def _check_ratio(obj, *names: str) -> None:
    for name in names:
        check(getattr(obj, name) >= 0, name, "a ratio >= 0", getattr(obj, name))


@dataclass(frozen=True)
class ReportConfig:
    """The final report: which phases to aggregate."""

    phases: tuple[str, ...] = doc(
        "Metric files (metrics/<phase>.json) to aggregate, in DAG order; missing ones are skipped.",
        default=("base", "evomerge", "quietstar", "train", "specialize", "agents", "compress"),
    )

    def __post_init__(self):
        for phase in self.phases:
            check(phase in PHASES, "phases", f"phase names among {', '.join(PHASES)}", phase)


@dataclass(frozen=True)
class BaseGates:
    """Claims on the specialists: each adds its skill and keeps what the ancestor knew."""

    min_specialist_accuracy: float = doc(
        "Each specialist's test exact match on its own family must reach this.", default=0.9)
    specialists_beat_ancestor: bool = doc("Each specialist must beat the ancestor on its own family.", default=True)
    min_other_family_ratio: float = doc(
        "On every other family where the ancestor scores >= 0.05, each specialist must keep at least "
        "this fraction of the ancestor's score (0 disables).", default=0.9)

    def __post_init__(self):
        _check_unit(self, "min_specialist_accuracy")
        _check_ratio(self, "min_other_family_ratio")


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

    def __post_init__(self):
        _check_ratio(self, "min_evolved_to_oracle")


@dataclass(frozen=True)
class TrainGates:
    """Claims on the Forge loop: the modular family groks, and no other family is lost."""

    min_modular_accuracy: float = doc(
        "The trained model's test exact match on the modular family (x+y, x*y mod 97) must reach this.",
        default=0.9)
    min_family_ratio_to_input: float = doc(
        "Every other family where the input scores >= 0.05 must keep this fraction of its input score.",
        default=0.97)

    def __post_init__(self):
        _check_unit(self, "min_modular_accuracy")
        _check_ratio(self, "min_family_ratio_to_input")


@dataclass(frozen=True)
class QuietStarGates:
    """Claim on Quiet-STaR: the switch follows the measurement (on only where thoughts pay)."""

    switch_follows_measurement: bool = doc(
        "quietstar.enabled must equal the stage's measured enabled_by_default (thoughts beat sft and pause "
        "beyond the spread, and random thoughts fall back).", default=True)


@dataclass(frozen=True)
class SpecializeGates:
    """Claims on the specialized model with per-prompt SVF experts, against its input."""

    min_adapted_gain: float = doc("test_mean_adapted - input_test_mean must reach this.", default=0.0)
    min_families_higher_by_2se: int = doc(
        "Families (with headroom) where the adapted model beats the input by >= 2 standard errors.", default=3)
    max_svf_to_lora_params: float = doc("SVF expert parameters / rank-4 LoRA parameters must not exceed this.",
                                        default=0.1)
    mixing_beats_best_single: bool = doc(
        "Few-shot mixing must beat the best single expert and the unadapted model on the composite task.",
        default=True)

    def __post_init__(self):
        check(self.min_families_higher_by_2se >= 0, "min_families_higher_by_2se", "an integer >= 0",
              self.min_families_higher_by_2se)
        _check_ratio(self, "max_svf_to_lora_params")


@dataclass(frozen=True)
class AgentsGates:
    """Claims on tools, memory and ADAS (each against its control arm)."""

    min_tool_gain_in_length: float = doc("MCP tool minus no-tool exact match, at the trained operand lengths.",
                                         default=0.3)
    max_wrong_tool_in_length: float = doc("The counterfactual tool's exact match must fall to this or below "
                                          "(the model copies what the tool says).", default=0.1)
    tool_gain_beyond_length: bool = doc("MCP tool must beat no tool beyond the trained operand lengths.", default=True)
    memory_on_beats_off_beyond_spread: bool = doc("Memory on must beat writes off by more than the std over seeds.",
                                                  default=True)
    memory_gate_beats_random_writes: bool = doc("The surprise gate must beat random writes.", default=True)
    adas_discovered_beats_hand: bool = doc(
        "The best discovered design must beat the best hand-written one on test at no more calls per item.",
        default=True)

    def __post_init__(self):
        _check_unit(self, "max_wrong_tool_in_length")


@dataclass(frozen=True)
class CompressGates:
    """Claims on compression: each stage's size (container file, header included) and retention."""

    max_stage1_fraction_fp32: float = doc("Stage-1 container bytes / fp32 bytes must not exceed this.",
                                          default=0.23)
    min_stage1_retention: float = doc("Stage-1 test mean / input test mean must reach this.", default=0.94)
    max_final_fraction_fp32: float = doc("Final container bytes / fp32 bytes must not exceed this.", default=0.10)
    min_final_retention: float = doc("Final test mean / input test mean must reach this.", default=0.92)
    final_smaller_than_stage1: bool = doc("The final container must be smaller than stage 1's.", default=True)
    min_final_adapted_retention: float | None = doc(
        "For a specialized input: the test mean of what the final container serves (its refit SVF "
        "experts with dispatch, or the plain weights if they were dropped) / the input's adapted test "
        "mean must reach this. null: no such claim (an input without experts).", default=None)

    def __post_init__(self):
        _check_unit(self, "max_stage1_fraction_fp32", "max_final_fraction_fp32")
        _check_ratio(self, "min_stage1_retention", "min_final_retention")
        if self.min_final_adapted_retention is not None:
            _check_ratio(self, "min_final_adapted_retention")


@dataclass(frozen=True)
class GatesConfig:
    """Quality gates checked by the `report` stage; a failed gate fails `dvc repro`."""

    base: BaseGates = doc("Gates on the base models.", default_factory=BaseGates)
    evomerge: EvoMergeGates = doc("Gates on the evolved model.", default_factory=EvoMergeGates)
    quietstar: QuietStarGates = doc("Gates on Quiet-STaR.", default_factory=QuietStarGates)
    train: TrainGates = doc("Gates on the trained model.", default_factory=TrainGates)
    specialize: SpecializeGates = doc("Gates on the specialized model.", default_factory=SpecializeGates)
    agents: AgentsGates = doc("Gates on the agents stage.", default_factory=AgentsGates)
    compress: CompressGates = doc("Gates on the compressed model.", default_factory=CompressGates)
