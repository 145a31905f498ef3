"""`forge analyze`: what each phase of a run cost and what it bought.

A phase is a pipeline stage (``specialist@NAME`` once per specialist). Its cost is the
``wall_s`` and ``peak_rss_gib`` that :func:`forgelib.runtime.stage` adds to the stage's metrics
JSON. What it bought is the test mean of the model it made and the change from the model it
started from (a specialist and the evolved model start from the ancestor, training from the
evolved model, specialization from the trained one, compression from the specialized one; the
quietstar and agents phases report their own control arms instead, their tasks being outside the
headline suite). Gates come from the report's
``metrics/summary.json``; a gate belongs to the phase its name starts with. Everything is read
from ``metrics/``; nothing is recomputed, so a missing phase is simply left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from forgelib.io import read_json

GROK_STAGES = ("pre-grok", "onset", "active", "consolidation")
"""Names of the logged ``geometry/stage`` indices: forgelib.train.geometry.STAGES, copied so that
reading metrics needs no torch import (a test keeps the two equal)."""


def _phase_files(metrics_dir: Path, base: dict) -> dict[str, Path | None]:
    """Phase name -> the metrics JSON its stage writes (and adds its cost to), in DAG order. The
    ancestor and the specialists count as phases when base.json scored them, even without a file."""
    models = [m for m in base.get("models", {}) if m != "ancestor"]
    specialists = sorted({d.name for d in (metrics_dir / "specialist").glob("*") if d.is_dir()} | set(models))
    files = {"prepare": metrics_dir / "prepare.json", "ancestor": metrics_dir / "ancestor" / "metrics.json"}
    files |= {f"specialist@{name}": metrics_dir / "specialist" / name / "metrics.json" for name in specialists}
    files |= {"base": metrics_dir / "base.json", "evomerge": metrics_dir / "evomerge.json",
              "quietstar": metrics_dir / "quietstar.json", "train": metrics_dir / "train.json",
              "specialize": metrics_dir / "specialize.json", "agents": metrics_dir / "agents.json",
              "compress": metrics_dir / "compress.json", "deploy": metrics_dir / "deploy.json",
              "report": metrics_dir / "summary.json"}
    files |= {f"humaneval@{p.stem}": p for p in sorted((metrics_dir / "humaneval").glob("*.json"))}
    scored = {"ancestor", *(f"specialist@{m}" for m in models)} if base else set()
    return {name: path if path.is_file() else None for name, path in files.items() if path.is_file() or name in scored}


def _bought(name: str, m: dict, base: dict) -> dict[str, Any]:
    """test_mean, the test mean it started from and that model's phase, plus phase-specific detail."""
    models = base.get("models", {})
    if name == "ancestor" and "ancestor" in models:
        return {"test_mean": models["ancestor"]["mean"]}
    if name.startswith("specialist@") and name.split("@", 1)[1] in models:
        model = name.split("@", 1)[1]
        return {"test_mean": models[model]["mean"], "input_test_mean": models.get("ancestor", {}).get("mean"),
                "compared_to": "ancestor", "family": base.get("specialists", {}).get(model)}
    if name == "evomerge":
        return {"test_mean": m.get("evolved_test_mean"), "input_test_mean": m.get("ancestor_test_mean"),
                "compared_to": "ancestor", "best_method": m.get("best_method")}
    if name == "train":
        trained, before = m.get("trained", {}).get("families", {}), m.get("input", {}).get("families", {})
        return {"test_mean": m.get("test_mean"), "input_test_mean": m.get("input_test_mean"), "compared_to": "evomerge",
                "family_delta": {f: trained[f] - before[f] for f in trained if f in before},
                "controllers": m.get("loop", {}).get("controllers", {})}
    if name == "quietstar":
        return {"test_mean": None, "task": m.get("task"), "enabled_by_default": m.get("enabled_by_default"),
                "arms": {arm: r.get("mean") for arm, r in m.get("arms", {}).items()}}
    if name == "specialize":
        return {"test_mean": m.get("test_mean"), "input_test_mean": m.get("input_test_mean"), "compared_to": "train",
                "test_mean_adapted": m.get("test_mean_adapted")}
    if name == "agents":
        adas = m.get("adas") or {}
        return {"test_mean": None, "tools": m.get("tools"),
                "memory": {k: (m.get("memory") or {}).get(k) for k in ("on", "off", "std")} if m.get("memory") else None,
                "adas": {k: adas.get(k) for k in ("best_test", "best_hand_test", "best_calls_per_item",
                                                  "hand_calls_per_item")} if adas else None}
    if name == "compress":
        keys = ("test_mean", "retention", "bits_per_param", "bytes", "fraction_fp32")
        return {"test_mean": m.get("final", {}).get("test_mean"), "input_test_mean": m.get("input_test_mean"),
                "compared_to": "specialize" if "adapted" in m else "train",
                "stages": {s: {k: m[s].get(k) for k in keys} for s in ("stage1", "final") if s in m},
                # served by `forge eval`/`serve` with its refit SVF experts (inference-time dispatch), apart
                "served_adapted": {s: {k: a.get(k) for k in ("experts", "test_mean_adapted", "adapted_retention")}
                                   for s, a in (m.get("adapted") or {}).items() if isinstance(a, dict)}}
    if name.startswith("humaneval@"):
        return {"test_mean": None, "pass@1": m.get("pass@1")}
    return {"test_mean": None}


def _gate_phase(gate: str, phases: dict) -> str:
    prefix = gate.split(".", 1)[0]
    return prefix if prefix in phases else "report"


def analyze(metrics_dir: str | Path = "metrics") -> dict:
    """``{"phases": {NAME: {"test_mean", "delta_test_mean", "wall_s", "peak_rss_gib", "gates", ...}},
    "total": {"wall_s", "peak_rss_gib"}, "all_gates_passed"}`` for every phase with a metrics file."""
    metrics_dir = Path(metrics_dir)
    base = read_json(metrics_dir / "base.json") if (metrics_dir / "base.json").is_file() else {}
    files = _phase_files(metrics_dir, base)
    loaded = {name: read_json(path) if path else {} for name, path in files.items()}
    phases: dict[str, dict] = {}
    for name, m in loaded.items():
        row = {"wall_s": m.get("wall_s"), "peak_rss_gib": m.get("peak_rss_gib"), "gates": {}, **_bought(name, m, base)}
        start = row.pop("input_test_mean", None)
        known = row["test_mean"] is not None and start is not None
        row["delta_test_mean"] = row["test_mean"] - start if known else None
        row["compared_to"] = row.get("compared_to") if known else None
        row["metrics_file"] = str(files[name]) if files[name] else None
        phases[name] = row
    summary = loaded.get("report", {})
    for gate, result in summary.get("gates", {}).items():
        phases[_gate_phase(gate, phases)]["gates"][gate] = result
    walls = [p["wall_s"] for p in phases.values() if p["wall_s"] is not None]
    peaks = [p["peak_rss_gib"] for p in phases.values() if p["peak_rss_gib"] is not None]
    return {"phases": phases,
            "total": {"wall_s": round(sum(walls), 2) if walls else None, "peak_rss_gib": max(peaks) if peaks else None},
            "all_gates_passed": summary.get("all_gates_passed")}


def _phase_of_change(path: str, key: str) -> tuple[str, str]:
    """Map one entry of `dvc metrics diff --json` (file, flattened key) to (phase, field).

    ``field`` is ``test_mean``, ``wall_s``, ``peak_rss_gib``, ``gate:NAME:passed|measured`` or the raw key.
    base.json's ``models.NAME.*`` keys belong to the model's own phase (ancestor or specialist).
    """
    parts = Path(path).parts
    stem = Path(path).stem
    if len(parts) >= 2 and parts[-2] == "ancestor":
        phase = "ancestor"
    elif len(parts) >= 3 and parts[-3] == "specialist":
        phase = f"specialist@{parts[-2]}"
    elif len(parts) >= 2 and parts[-2] == "humaneval":
        phase = f"humaneval@{stem}"
    else:
        phase = {"summary": "report"}.get(stem, stem)
    if key in ("wall_s", "peak_rss_gib"):
        return phase, key
    if phase == "base" and key.startswith("models."):
        model, _, rest = key[len("models."):].partition(".")
        phase = "ancestor" if model == "ancestor" else f"specialist@{model}"
        return phase, "test_mean" if rest == "mean" else key
    if phase == "report" and key.startswith("gates.") and key.endswith((".passed", ".measured")):
        gate, _, part = key[len("gates."):].rpartition(".")
        return gate.split(".", 1)[0], f"gate:{gate}:{part}"
    test_mean_key = {"evomerge": "evolved_test_mean", "train": "test_mean", "specialize": "test_mean",
                     "compress": "final.test_mean"}.get(phase)
    return phase, "test_mean" if key == test_mean_key else key


def compare(diff: dict[str, dict[str, dict]], order: list[str] = ()) -> dict[str, dict]:
    """Per phase (the phases in ``order`` first), the changes in `dvc metrics diff REV --json`:
    ``{PHASE: {"test_mean"|"wall_s"|"peak_rss_gib": {"old", "new", "diff"},
    "gates": {NAME: {"passed": {"old", "new"}, "measured": {"old", "new"}}}, "other": {KEY: {...}}}}``
    (a gate lists only what changed)."""
    out: dict[str, dict] = {}
    for path, changes in diff.items():
        for key, change in changes.items():
            phase, field = _phase_of_change(path, key)
            entry = out.setdefault(phase, {"gates": {}, "other": {}})
            if field.startswith("gate:"):
                _, gate, part = field.split(":")
                entry["gates"].setdefault(gate, {})[part] = {"old": change.get("old"), "new": change.get("new")}
            elif field in ("test_mean", "wall_s", "peak_rss_gib"):
                entry[field] = change
            else:
                entry["other"][key] = change
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(out.items(), key=lambda item: rank.get(item[0], len(rank))))


def dvc_metrics_diff(rev: str, cwd: str | Path = ".") -> dict:
    """`dvc metrics diff REV --json` (changed metrics only) as a dict."""
    import subprocess

    from forgelib.errors import ForgeError

    proc = subprocess.run(["dvc", "metrics", "diff", rev, "--json"], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ForgeError(f"--compare {rev}: `dvc metrics diff {rev} --json` failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout or "{}")


def _num(value, fmt: str, signed: bool = False) -> str:
    if value is None:
        return "-"
    return format(value, ("+" if signed else "") + fmt)


def _controller_value(key: str, value) -> str:
    short = key.split("/", 1)[-1]
    if key == "geometry/stage" and isinstance(value, (int, float)) and 0 <= value < len(GROK_STAGES):
        return f"{short}={GROK_STAGES[int(value)]}"
    return f"{short}={value:.4g}" if isinstance(value, (int, float)) else f"{short}={value}"


def format_analysis(result: dict) -> str:
    """A fixed-width table (one line per phase), the train phase's controllers, failed gates, and
    the comparison with a revision when there is one."""
    lines = [f"{'phase':24s} {'test_mean':>9s} {'delta':>8s} {'vs':10s} {'wall_s':>8s} {'peak GiB':>8s}  gates"]
    for name, p in result["phases"].items():
        gates = p["gates"]
        passed = sum(1 for g in gates.values() if g.get("passed"))
        lines.append(f"{name:24s} {_num(p['test_mean'], '.3f'):>9s} {_num(p['delta_test_mean'], '.3f', True):>8s} "
                     f"{p['compared_to'] or '':10s} {_num(p['wall_s'], '.1f'):>8s} {_num(p['peak_rss_gib'], '.2f'):>8s}  "
                     f"{f'{passed}/{len(gates)} passed' if gates else '-'}")
    total = result["total"]
    lines.append(f"{'total':24s} {'':>9s} {'':>8s} {'':10s} {_num(total['wall_s'], '.1f'):>8s} "
                 f"{_num(total['peak_rss_gib'], '.2f'):>8s}  (sum of wall time, max of peak RSS)")
    train = result["phases"].get("train")
    if train and train.get("controllers"):
        lines += ["", "train: the controllers' final state (metrics/train.json loop.controllers)"]
        for controller, values in train["controllers"].items():
            shown = ", ".join(_controller_value(k, v) for k, v in values.items())
            lines.append(f"  {controller:14s} {shown}")
        if train.get("family_delta"):
            lines.append("  per family vs the input model: " + ", ".join(
                f"{f} {d:+.3f}" for f, d in sorted(train["family_delta"].items())))
    failed = [(g, r) for p in result["phases"].values() for g, r in p["gates"].items() if not r.get("passed")]
    if failed:
        lines += ["", "failed gates:"] + [f"  {g}: {r.get('measured', '')}" for g, r in failed]
    if "compare" in result:
        lines += ["", f"changes since {result['compare']['rev']} (dvc metrics diff):"]
        for phase, change in result["compare"]["phases"].items():
            parts = [f"{field} {_num(change[field].get('old'), '.4g')} -> {_num(change[field].get('new'), '.4g')}"
                     for field in ("test_mean", "wall_s", "peak_rss_gib") if field in change]
            parts += [f"gate {g}: {'pass' if c['passed']['old'] else 'FAIL'} -> {'pass' if c['passed']['new'] else 'FAIL'}"
                      for g, c in change["gates"].items() if "passed" in c]
            if change["other"]:
                parts.append(f"{len(change['other'])} other metric(s) changed")
            lines.append(f"  {phase:22s} " + "; ".join(parts))
    return "\n".join(lines)
