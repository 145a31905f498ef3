"""Vega-Lite specs of the dashboard's charts, built from a run's metrics (pure functions).

Each builder returns a spec, or None when the run logged nothing for it (the page then says
why). Curves come from the dvclive TSVs under ``metrics/train/plots/metrics/``; a long run is
thinned to at most :data:`MAX_POINTS` points per curve so the page stays small.
"""

from __future__ import annotations

import csv
from pathlib import Path

from forgelib.analyze import GROK_STAGES

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
WIDTH, HEIGHT = 760, 240
MAX_POINTS = 400
STAGE_COLORS = ("#eeeeee", "#fde2b0", "#c8e6c9", "#cfe0f5")  # light, so the curves stay readable on top


def read_curve(path: Path) -> list[tuple[float, float]]:
    """(step, value) pairs of one dvclive TSV (columns ``[timestamp,] step, NAME``); [] if absent."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    if len(rows) < 2 or "step" not in rows[0]:
        return []
    step = rows[0].index("step")
    points = [(float(r[step]), float(r[-1])) for r in rows[1:] if len(r) == len(rows[0])]
    if not points:
        return []
    stride = -(-len(points) // MAX_POINTS)  # ceil: keep at most MAX_POINTS, always the last one
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def _curves(plots: Path, names: dict[str, str]) -> list[dict]:
    """Long-form rows {step, curve, value} for each label -> TSV path (relative, no suffix)."""
    return [{"step": s, "curve": label, "value": v}
            for label, rel in names.items() for s, v in read_curve(plots / f"{rel}.tsv")]


def _line(rows: list[dict], y_title: str, title: str, **y_scale) -> dict:
    return {"data": {"values": rows}, "mark": {"type": "line", "strokeWidth": 2},
            "encoding": {"x": {"field": "step", "type": "quantitative", "title": "step"},
                         "y": {"field": "value", "type": "quantitative", "title": y_title,
                               **({"scale": y_scale} if y_scale else {})},
                         "stroke": {"field": "curve", "type": "nominal", "title": None}},
            "title": title}


def _chart(spec: dict, width: int = WIDTH, height: int = HEIGHT) -> dict:
    return {"$schema": SCHEMA, "width": width, "height": height, "background": "white", **spec}


def evomerge_fitness(evomerge: dict) -> dict | None:
    """Best, mean and worst validation fitness of the population per generation."""
    rows = [{"step": g, "curve": key, "value": gen[key]}
            for g, gen in enumerate(evomerge.get("generations", [])) for key in ("best", "mean", "worst") if key in gen]
    if not rows:
        return None
    spec = _line(rows, "fitness (validation exact match)", "population fitness")
    spec["encoding"]["x"] = {"field": "step", "type": "quantitative", "title": "generation", "axis": {"tickMinStep": 1}}
    spec["mark"]["point"] = True
    return _chart(spec)


def grok_stage_bands(plots: Path, last_step: float) -> list[dict]:
    """Spans [start, end) of constant grokking stage from ``geometry/stage.tsv`` (the stage is
    re-classified at each evaluation and holds until the next one)."""
    points = read_curve(plots / "geometry" / "stage.tsv")
    bands: list[dict] = []
    for step, index in points:
        name = GROK_STAGES[int(index)] if 0 <= index < len(GROK_STAGES) else f"stage {index:g}"
        if bands and bands[-1]["stage"] == name:
            continue
        if bands:
            bands[-1]["end"] = step
        bands.append({"start": step, "end": None, "stage": name})
    for band in bands:
        band["end"] = band["end"] if band["end"] is not None else max(last_step, band["start"])
        band["mid"] = (band["start"] + band["end"]) / 2
    return bands


def training_accuracy(plots: Path) -> dict | None:
    """In-loop train/validation accuracy (and per family), over the grokking-stage bands."""
    names = {"train": "eval/train_acc", "validation": "eval/val_acc"}
    names |= {f"val {p.stem}": f"eval/val_family/{p.stem}" for p in sorted((plots / "eval" / "val_family").glob("*.tsv"))}
    rows = _curves(plots, names)
    if not rows:
        return None
    bands = grok_stage_bands(plots, max(r["step"] for r in rows))
    layers = [_line(rows, "exact match", "")]
    layers[0].pop("title")
    if bands:
        x = {"field": "start", "type": "quantitative"}
        layers[:0] = [
            {"data": {"values": bands}, "mark": {"type": "rect", "opacity": 0.9},
             "encoding": {"x": x, "x2": {"field": "end"},
                          "fill": {"field": "stage", "type": "nominal", "title": "grokking stage",
                                   "scale": {"domain": list(GROK_STAGES), "range": list(STAGE_COLORS)}}}},
            {"data": {"values": bands}, "mark": {"type": "text", "baseline": "top", "dy": 4, "color": "#555"},
             "encoding": {"x": {"field": "mid", "type": "quantitative"}, "y": {"value": 0}, "text": {"field": "stage"}}},
        ]
    title = "accuracy (bands: grokking stage from the geometry probe)" if bands else "accuracy (no geometry probe logged)"
    return _chart({"title": title, "layer": layers})


def training_loss(plots: Path) -> dict | None:
    rows = _curves(plots, {"batch loss": "loss", "eval train": "eval/train_loss", "eval validation": "eval/val_loss"})
    return _chart(_line(rows, "answer loss", "loss")) if rows else None


def grokfast_lambda(plots: Path) -> dict | None:
    rows = _curves(plots, {"lambda": "grokfast/lamb"})
    return _chart(_line(rows, "Grokfast lambda", "Grokfast amplification lambda"), width=340, height=180) if rows else None


def edge_levels(plots: Path) -> dict | None:
    names = {p.stem: f"edge/level/{p.stem}" for p in sorted((plots / "edge" / "level").glob("*.tsv"))}
    rows = _curves(plots, names)
    if not rows:
        return None
    return _chart(_line(rows, "difficulty level", "edge curriculum level per family"), width=340, height=180)


def compression_frontier(compress: dict) -> dict | None:
    """Retention against bits per parameter: the fp32 input, then stage 1 and the final container."""
    points = [{"model": "trained (fp32)", "bits": 32.0, "retention": 1.0}] if compress.get("input_test_mean") else []
    points += [{"model": stage, "bits": compress[stage]["bits_per_param"], "retention": compress[stage]["retention"]}
               for stage in ("stage1", "final") if stage in compress and "bits_per_param" in compress[stage]]
    if len(points) < 2:
        return None
    x = {"field": "bits", "type": "quantitative", "title": "bits per parameter (log scale)",
         "scale": {"type": "log", "base": 2}}
    y = {"field": "retention", "type": "quantitative", "title": "retention (test mean / input's)", "scale": {"zero": False}}
    return _chart({
        "title": "compression frontier",
        "data": {"values": points},
        "layer": [
            {"mark": {"type": "line", "point": {"size": 80}}, "encoding": {"x": x, "y": y, "order": {"field": "bits", "sort": "descending"}}},
            {"mark": {"type": "text", "dy": -12}, "encoding": {"x": x, "y": y, "text": {"field": "model"}}},
        ],
    }, width=520, height=260)
