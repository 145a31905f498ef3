"""The `report` stage: a phase-by-phase summary and the quality gates.

Reads ``metrics/<phase>.json`` of every phase that ran, writes ``metrics/summary.json`` and a
Markdown table ``metrics/summary.md``, and checks ``gates:`` from params.yaml. A failed gate is
a :class:`ForgeError` (exit 2) listing every failed gate with the measured value, so
``dvc repro`` stops and ``dvc metrics diff`` shows why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from forgelib.errors import ForgeError
from forgelib.io import read_json, write_json, write_text_atomic
from forgelib.report_config import GatesConfig

Gate = tuple[str, bool, str]  # (name, passed, "measured vs required")


def base_rows(m: dict) -> list[dict]:
    return [{"phase": "base", "model": name, "test_mean": r["mean"], "perplexity": r.get("perplexity")} for name, r in m["models"].items()]


def evomerge_rows(m: dict) -> list[dict]:
    return [
        {"phase": "evomerge", "model": "evolved", "test_mean": m["evolved_test_mean"]},
        {"phase": "evomerge", "model": "oracle (best parent per family)", "test_mean": m["oracle_test_mean"]},
        {"phase": "evomerge", "model": "uniform task arithmetic", "test_mean": m["uniform_task_arithmetic_test_mean"]},
    ]


def train_rows(m: dict) -> list[dict]:
    return [{"phase": "train", "model": "trained", "test_mean": m["test_mean"], "perplexity": m.get("perplexity")}]


def compress_rows(m: dict) -> list[dict]:
    return [
        {"phase": "compress", "model": f"compressed ({stage})", "test_mean": m[stage]["test_mean"],
         "perplexity": m[stage].get("perplexity"), "fraction_fp32": m[stage]["fraction_fp32"]}
        for stage in ("stage1", "final") if stage in m
    ]


HEADROOM = 0.05
"""Ratios are only claimed on families where the reference scores at least this: a ratio to a
near-zero score says nothing (the base stage applies the same rule to its
``other_families_vs_ancestor``)."""


def base_gates(m: dict, g: GatesConfig) -> list[Gate]:
    gates = []
    ancestor = m["models"]["ancestor"]["families"]
    for name, fam in m["specialists"].items():
        families = m["models"][name]["families"]
        own, anc = families[fam], ancestor[fam]
        gates.append((f"base.{name}.own_family", own >= g.base.min_specialist_accuracy, f"{own:.3f} >= {g.base.min_specialist_accuracy}"))
        if g.base.specialists_beat_ancestor:
            gates.append((f"base.{name}.beats_ancestor", own > anc, f"{own:.3f} > ancestor {anc:.3f}"))
        if g.base.min_other_family_ratio > 0:
            ratios = m["other_families_vs_ancestor"][name]  # computed by the base stage
            worst = min(ratios, key=ratios.get)
            gates.append((f"base.{name}.keeps_other_families", ratios[worst] >= g.base.min_other_family_ratio,
                          f"min ratio to ancestor {ratios[worst]:.3f} ({worst}) >= {g.base.min_other_family_ratio}"))
    return gates


def evomerge_gates(m: dict, g: GatesConfig) -> list[Gate]:
    evo, anc, single = m["evolved_test_mean"], m["ancestor_test_mean"], m["best_single_model_test_mean"]
    gates = []
    if g.evomerge.evolved_beats_ancestor:
        gates.append(("evomerge.beats_ancestor", evo > anc, f"{evo:.3f} > ancestor {anc:.3f}"))
    if g.evomerge.evolved_beats_best_single_model:
        gates.append(("evomerge.beats_best_single_model", evo > single,
                      f"{evo:.3f} > {m['best_single_model']} {single:.3f}"))
    ratio = m["evolved_to_oracle"]
    gates.append(("evomerge.evolved_to_oracle", ratio >= g.evomerge.min_evolved_to_oracle,
                  f"{ratio:.3f} >= {g.evomerge.min_evolved_to_oracle} (oracle {m['oracle_test_mean']:.3f})"))
    return gates


def train_gates(m: dict, g: GatesConfig) -> list[Gate]:
    trained, before = m["trained"]["families"], m["input"]["families"]
    gates = []
    if "modular" in trained:
        modular = trained["modular"]
        gates.append(("train.modular_accuracy", modular >= g.train.min_modular_accuracy,
                      f"{modular:.3f} >= {g.train.min_modular_accuracy} (input {before['modular']:.3f})"))
    ratios = {f: trained[f] / before[f] for f in trained if f != "modular" and before[f] >= HEADROOM}
    if ratios:
        worst = min(ratios, key=ratios.get)
        gates.append(("train.keeps_other_families", ratios[worst] >= g.train.min_family_ratio_to_input,
                      f"min ratio to input {ratios[worst]:.3f} ({worst}) >= {g.train.min_family_ratio_to_input}"))
    return gates


def _retention_gate(name: str, retention: float | None, floor: float) -> Gate:
    # retention is None when the input model scores 0 (a diverged train run): undefined, so failed
    if retention is None:
        return (name, False, f"undefined (the input model's test mean is 0) >= {floor}")
    return (name, retention >= floor, f"{retention:.3f} >= {floor}")


def compress_gates(m: dict, g: GatesConfig) -> list[Gate]:
    c = g.compress
    final, stage1 = m["final"], m["stage1"]
    gates = [
        ("compress.stage1_fraction_fp32", stage1["fraction_fp32"] <= c.max_stage1_fraction_fp32, f"{stage1['fraction_fp32']:.4f} <= {c.max_stage1_fraction_fp32}"),
        _retention_gate("compress.stage1_retention", stage1["retention"], c.min_stage1_retention),
        ("compress.final_fraction_fp32", final["fraction_fp32"] <= c.max_final_fraction_fp32, f"{final['fraction_fp32']:.4f} <= {c.max_final_fraction_fp32}"),
        _retention_gate("compress.final_retention", final["retention"], c.min_final_retention),
    ]
    if c.final_smaller_than_stage1:
        gates.append(("compress.final_smaller_than_stage1", final["bytes"] < stage1["bytes"],
                      f"{final['bytes']} B < stage 1 {stage1['bytes']} B"))
    return gates


PHASES: dict[str, tuple[Callable[[dict], list[dict]], Callable[[dict, GatesConfig], list[Gate]]]] = {
    "base": (base_rows, base_gates),
    "evomerge": (evomerge_rows, evomerge_gates),
    "train": (train_rows, train_gates),
    "compress": (compress_rows, compress_gates),
}


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict], gates: list[Gate]) -> str:
    cols = ["phase", "model", "test_mean", "perplexity", "fraction_fp32"]
    lines = ["# Forge summary", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    lines += ["", "## Gates", "", "| gate | result | measured |", "|---|---|---|"]
    lines += [f"| {name} | {'pass' if ok else 'FAIL'} | {detail} |" for name, ok, detail in gates]
    return "\n".join(lines) + "\n"


def build_report(phases: tuple[str, ...], gates_cfg: GatesConfig, metrics_dir: str | Path, out_json: str | Path, out_md: str | Path) -> dict:
    metrics_dir = Path(metrics_dir)
    rows: list[dict] = []
    gates: list[Gate] = []
    for phase in phases:
        if phase not in PHASES:
            raise ForgeError(f"report.phases: unknown phase {phase!r}; valid: {', '.join(PHASES)}")
        path = metrics_dir / f"{phase}.json"
        if not path.is_file():
            continue
        metrics = read_json(path)
        to_rows, to_gates = PHASES[phase]
        rows += to_rows(metrics)
        gates += to_gates(metrics, gates_cfg)
    summary = {
        "rows": rows,
        "gates": {name: {"passed": ok, "measured": detail} for name, ok, detail in gates},
        "all_gates_passed": all(ok for _, ok, _ in gates),
    }
    write_json(out_json, summary)
    write_text_atomic(out_md, markdown(rows, gates))
    failed = [f"{name} ({detail})" for name, ok, detail in gates if not ok]
    if failed:
        raise ForgeError(f"quality gates failed (params.yaml `gates:`): {'; '.join(failed)}. See {out_md}.")
    return summary
