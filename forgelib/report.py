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


def quietstar_rows(m: dict) -> list[dict]:
    return [{"phase": "quietstar", "model": f"{arm} ({m['task']}, {len(r['test_mean'])} seeds)", "test_mean": r["mean"]}
            for arm, r in m["arms"].items()]


def specialize_rows(m: dict) -> list[dict]:
    return [
        {"phase": "specialize", "model": "specialized (plain weights)", "test_mean": m["test_mean"]},
        {"phase": "specialize", "model": "specialized (SVF expert per prompt)", "test_mean": m["test_mean_adapted"]},
    ]


def agents_rows(m: dict) -> list[dict]:
    rows = [{"phase": "agents", "model": f"tools: {arm} (beyond trained lengths)", "test_mean": m["tools"][arm]}
            for arm in ("no_tool", "mcp", "wrong_tool", "oracle_call")]
    in_length = ((m.get("details") or {}).get("tools") or {}).get("in_length") or {}
    rows += [{"phase": "agents", "model": f"tools: {arm} (in length)", "test_mean": in_length[arm]}
             for arm in ("no_tool", "mcp", "wrong_tool", "oracle_call") if arm in in_length]
    if m.get("memory"):
        rows += [{"phase": "agents", "model": f"memory: {arm} (beyond the window)", "test_mean": m["memory"][arm]}
                 for arm in ("on", "off", "write_all", "random_writes")]
    if m.get("adas"):
        a = m["adas"]
        rows.append({"phase": "agents", "model": f"adas: best hand-written ({a['best_hand_design']})",
                     "test_mean": a["best_hand_test"]})
        if a.get("best_test") is not None:
            rows.append({"phase": "agents", "model": f"adas: best discovered ({a['best_design']})", "test_mean": a["best_test"]})
    return rows


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
    if c.min_final_adapted_retention is not None:
        adapted = (m.get("adapted") or {}).get("final")
        if adapted is None:
            gates.append(("compress.final_adapted_retention", False,
                          f"no adapted figure (the input has no SVF experts) >= {c.min_final_adapted_retention}"))
        else:
            gates.append(_retention_gate("compress.final_adapted_retention", adapted.get("adapted_retention"),
                                         c.min_final_adapted_retention))
    return gates


def quietstar_gates(m: dict, g: GatesConfig) -> list[Gate]:
    gates = []
    if g.quietstar.switch_follows_measurement:
        gates.append(("quietstar.switch_follows_measurement", m["enabled"] == m["enabled_by_default"],
                      f"quietstar.enabled {m['enabled']} == measured enabled_by_default {m['enabled_by_default']}"))
    return gates


def specialize_gates(m: dict, g: GatesConfig) -> list[Gate]:
    s = g.specialize
    gain = m["test_mean_adapted"] - m["input_test_mean"]
    gates = [("specialize.adapted_gain", gain >= s.min_adapted_gain,
              f"{gain:+.4f} >= {s.min_adapted_gain} (adapted {m['test_mean_adapted']:.3f}, input {m['input_test_mean']:.3f})")]
    families = m.get("families") or {}
    gaining = sorted(f for f, r in families.items() if r.get("higher_by_2se"))
    gates.append(("specialize.families_higher_by_2se", len(gaining) >= s.min_families_higher_by_2se,
                  f"{len(gaining)} ({', '.join(gaining) or 'none'}) >= {s.min_families_higher_by_2se}"))
    experts = (m.get("svf") or {}).get("experts") or {}
    ratios = {f: e["params"] / e["lora_params"] for f, e in experts.items() if e.get("lora_params")}
    if ratios:
        worst = max(ratios.values())
        gates.append(("specialize.svf_params_vs_lora", worst <= s.max_svf_to_lora_params,
                      f"{worst:.3f} <= {s.max_svf_to_lora_params}"))
    mixing = (m.get("svf") or {}).get("mixing")
    if s.mixing_beats_best_single and mixing:
        gates.append(("specialize.mixing_beats_best_single", mixing["mixed"] > max(mixing["best_single"], mixing["unadapted"]),
                      f"{mixing['mixed']:.3f} > best single {mixing['best_single']:.3f}, unadapted {mixing['unadapted']:.3f}"))
    return gates


def agents_gates(m: dict, g: GatesConfig) -> list[Gate]:
    a = g.agents
    gates = []
    in_length = ((m.get("details") or {}).get("tools") or {}).get("in_length") or {}
    if in_length:
        gain = in_length["mcp"] - in_length["no_tool"]
        gates.append(("agents.tool_gain_in_length", gain >= a.min_tool_gain_in_length,
                      f"{gain:+.3f} >= {a.min_tool_gain_in_length} (mcp {in_length['mcp']:.3f}, no tool {in_length['no_tool']:.3f})"))
        gates.append(("agents.wrong_tool_collapses", in_length["wrong_tool"] <= a.max_wrong_tool_in_length,
                      f"{in_length['wrong_tool']:.3f} <= {a.max_wrong_tool_in_length}"))
    if a.tool_gain_beyond_length:
        t = m["tools"]
        gates.append(("agents.tool_gain_beyond_length", t["mcp"] > t["no_tool"], f"{t['mcp']:.3f} > {t['no_tool']:.3f}"))
    mem = m.get("memory")
    if mem and a.memory_on_beats_off_beyond_spread:
        gates.append(("agents.memory_on_beats_off", mem["on"] - mem["off"] > mem["std"],
                      f"{mem['on']:.3f} - {mem['off']:.3f} > std {mem['std']:.3f}"))
    if mem and a.memory_gate_beats_random_writes:
        gates.append(("agents.memory_gate_beats_random", mem["on"] > mem["random_writes"],
                      f"{mem['on']:.3f} > random writes {mem['random_writes']:.3f}"))
    ad = m.get("adas")
    if ad and a.adas_discovered_beats_hand:
        ok = ad.get("best_test") is not None and ad["best_test"] > ad["best_hand_test"] \
            and ad["best_calls_per_item"] <= ad["hand_calls_per_item"]
        gates.append(("agents.adas_discovered_beats_hand", ok,
                      f"{ad.get('best_test')} > {ad['best_hand_test']:.3f} at <= {ad['hand_calls_per_item']:.2f} calls/item"))
    return gates


PHASES: dict[str, tuple[Callable[[dict], list[dict]], Callable[[dict, GatesConfig], list[Gate]]]] = {
    "base": (base_rows, base_gates),
    "evomerge": (evomerge_rows, evomerge_gates),
    "quietstar": (quietstar_rows, quietstar_gates),
    "train": (train_rows, train_gates),
    "specialize": (specialize_rows, specialize_gates),
    "agents": (agents_rows, agents_gates),
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
