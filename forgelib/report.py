"""The `report` stage: a phase-by-phase summary and the quality gates.

Reads ``metrics/<phase>.json`` of every phase that ran, writes ``metrics/summary.json`` and a
Markdown table ``metrics/summary.md``, and checks ``gates:`` from params.yaml. A failed gate is
a :class:`ForgeError` (exit 2) listing every failed gate with the measured value, so
``dvc repro`` stops and ``dvc metrics diff`` shows why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from forgelib.config import GatesConfig
from forgelib.errors import ForgeError
from forgelib.io import read_json, write_json, write_text_atomic

Gate = tuple[str, bool, str]  # (name, passed, "measured vs required")


def base_rows(m: dict) -> list[dict]:
    return [{"phase": "base", "model": name, "test_mean": r["mean"], "perplexity": r.get("perplexity")} for name, r in m["models"].items()]


def evomerge_rows(m: dict) -> list[dict]:
    return [
        {"phase": "evomerge", "model": "evolved", "test_mean": m["evolved_test_mean"]},
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


def base_gates(m: dict, g: GatesConfig) -> list[Gate]:
    gates = []
    for name, fam in m["specialists"].items():
        own = m["models"][name]["families"][fam]
        anc = m["models"]["ancestor"]["families"][fam]
        gates.append((f"base.{name}.own_family", own >= g.base.min_specialist_accuracy, f"{own:.3f} >= {g.base.min_specialist_accuracy}"))
        if g.base.specialists_beat_ancestor:
            gates.append((f"base.{name}.beats_ancestor", own > anc, f"{own:.3f} > ancestor {anc:.3f}"))
    return gates


def evomerge_gates(m: dict, g: GatesConfig) -> list[Gate]:
    evo, best = m["evolved_test_mean"], m["best_parent_test_mean"]
    ratio = evo / best if best else float("inf")
    gates = [("evomerge.ratio_to_best_parent", ratio >= g.evomerge.min_ratio_to_best_parent, f"{ratio:.3f} >= {g.evomerge.min_ratio_to_best_parent}")]
    if g.evomerge.evolved_beats_best_parent:
        gates.append(("evomerge.beats_best_parent", evo > best, f"{evo:.3f} > {best:.3f}"))
    return gates


def train_gates(m: dict, g: GatesConfig) -> list[Gate]:
    ratio = m["test_mean"] / m["input_test_mean"] if m["input_test_mean"] else float("inf")
    return [
        ("train.min_test_mean", m["test_mean"] >= g.train.min_test_mean, f"{m['test_mean']:.3f} >= {g.train.min_test_mean}"),
        ("train.ratio_to_input", ratio >= g.train.min_ratio_to_input, f"{ratio:.3f} >= {g.train.min_ratio_to_input}"),
    ]


def compress_gates(m: dict, g: GatesConfig) -> list[Gate]:
    c = g.compress
    final, stage1 = m["final"], m["stage1"]
    return [
        ("compress.final_fraction_fp32", final["fraction_fp32"] <= c.max_final_fraction_fp32, f"{final['fraction_fp32']:.4f} <= {c.max_final_fraction_fp32}"),
        ("compress.final_retention", final["retention"] >= c.min_final_retention, f"{final['retention']:.3f} >= {c.min_final_retention}"),
        ("compress.stage1_retention", stage1["retention"] >= c.min_stage1_retention, f"{stage1['retention']:.3f} >= {c.min_stage1_retention}"),
    ]


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
