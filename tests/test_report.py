"""The report's gates state the phases' claims, and each one can fail."""

import pytest

from forgelib.configtools import from_dict
from forgelib.errors import ForgeError
from forgelib.report import base_gates, build_report, compress_gates, evomerge_gates, train_gates
from forgelib.report_config import GatesConfig
from forgelib.train.forge_loop import steps_to_threshold


def fams(arithmetic, logic, modular, string):
    return {"arithmetic": arithmetic, "logic": logic, "modular": modular, "string": string}


BASE = {
    "specialists": {"arith": "arithmetic"},
    "models": {"ancestor": {"families": fams(0.1, 0.5, 0.01, 0.9), "mean": 0.3775},
               "arith": {"families": fams(0.95, 0.46, 0.0, 0.8), "mean": 0.5525}},
    # as the base stage writes it: modular is left out (the ancestor's 0.01 < 0.05)
    "other_families_vs_ancestor": {"arith": {"logic": 0.46 / 0.5, "string": 0.8 / 0.9}},
}


def results(gates):
    return {name: ok for name, ok, _ in gates}


def test_base_gates_check_what_a_specialist_kept():
    got = results(base_gates(BASE, GatesConfig()))
    assert got["base.arith.own_family"] and got["base.arith.beats_ancestor"]
    # string 0.8 / 0.9 = 0.889 < 0.9 fails; modular (ancestor 0.01 < 0.05) is not judged
    assert not got["base.arith.keeps_other_families"]
    relaxed = from_dict(GatesConfig, {"base": {"min_other_family_ratio": 0.88}}, "gates")
    assert results(base_gates(BASE, relaxed))["base.arith.keeps_other_families"]


def test_evomerge_gates_compare_with_best_single_model_and_oracle():
    metrics = {"evolved_test_mean": 0.60, "ancestor_test_mean": 0.42, "best_single_model": "arith",
               "best_single_model_test_mean": 0.60, "oracle_test_mean": 0.62, "evolved_to_oracle": 0.60 / 0.62}
    got = results(evomerge_gates(metrics, GatesConfig()))
    assert got == {"evomerge.beats_ancestor": True, "evomerge.beats_best_single_model": False,
                   "evomerge.evolved_to_oracle": True}  # 0.968 >= 0.95, but a tie is no gain


def test_train_gates_need_modular_and_keep_the_rest():
    metrics = {"trained": {"families": fams(0.72, 0.70, 0.91, 0.98)},
               "input": {"families": fams(0.80, 0.60, 0.06, 0.92)}}
    got = results(train_gates(metrics, GatesConfig()))
    assert got == {"train.modular_accuracy": True, "train.keeps_other_families": False}  # 0.72/0.80 = 0.9


def test_compress_gates_require_final_smaller_than_stage1():
    stage = {"fraction_fp32": 0.08, "retention": 0.95, "bytes": 1000}
    got = results(compress_gates({"stage1": stage, "final": stage | {"bytes": 1000}}, GatesConfig()))
    assert not got["compress.final_smaller_than_stage1"] and got["compress.final_retention"]
    assert "compress.final_adapted_retention" not in got  # null by default: no claim


def test_compress_adapted_retention_gate_reads_what_the_container_serves():
    stage = {"fraction_fp32": 0.08, "retention": 0.78, "bytes": 1000}
    metrics = {"stage1": stage | {"bytes": 2000}, "final": stage,
               "adapted": {"final": {"experts": "refit", "adapted_retention": 0.928}}}
    claim = from_dict(GatesConfig, {"compress": {"min_final_adapted_retention": 0.92}}, "gates")
    got = results(compress_gates(metrics, claim))
    assert got["compress.final_adapted_retention"] and not got["compress.final_retention"]  # 0.78 < 0.92
    metrics["adapted"]["final"]["adapted_retention"] = 0.91
    assert not results(compress_gates(metrics, claim))["compress.final_adapted_retention"]
    assert not results(compress_gates({"stage1": metrics["stage1"], "final": stage}, claim))[
        "compress.final_adapted_retention"]  # no experts, no adapted figure: the claim fails
    with pytest.raises(ForgeError, match="min_final_adapted_retention"):
        from_dict(GatesConfig, {"compress": {"min_final_adapted_retention": -0.1}}, "gates")


def test_failed_gate_fails_the_report_naming_it(tmp_path):
    import json

    (tmp_path / "base.json").write_text(json.dumps(BASE))
    with pytest.raises(ForgeError, match="base.arith.keeps_other_families"):
        build_report(("base",), GatesConfig(), tmp_path, tmp_path / "s.json", tmp_path / "s.md")
    assert "FAIL" in (tmp_path / "s.md").read_text()


def test_steps_to_threshold_needs_two_evaluations_in_a_row():
    history = [{"step": s, "eval/val_family/modular": acc}
               for s, acc in ((100, 0.2), (200, 0.91), (300, 0.85), (400, 0.92), (500, 0.95))]
    history.insert(2, {"step": 250, "loss": 1.0})  # log-only records are skipped
    assert steps_to_threshold(history, "modular", 0.9) == 400
    assert steps_to_threshold(history, "modular", 0.99) is None
