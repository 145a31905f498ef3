"""Checkpoint analysis for ``forge training analyze --checkpoint PATH``: trajectory, stages,
controller states, and PNG plots.

Reads only the JSON parts of a checkpoint (trainer.json, controllers.json); tensors are
described by shape and dtype, never loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgelib.errors import ForgeError
from forgelib.io import read_json
from forgelib.train.checkpoint import latest_checkpoint, read_trainer_state


def _describe_tensors(obj: Any) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return f"tensor{tuple(obj['shape'])} {obj['dtype']}"
    if isinstance(obj, dict):
        return {k: _describe_tensors(v) for k, v in obj.items()}
    if isinstance(obj, list):
        if len(obj) > 20:
            return f"<{len(obj)} items>"
        return [_describe_tensors(v) for v in obj]
    return obj


def resolve_checkpoint(path: str | Path) -> Path:
    """A ``step-*`` directory, or the newest one inside a checkpoint directory."""
    path = Path(path)
    if (path / "trainer.json").is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise ForgeError(f"{path}: no Forge checkpoint here (expected trainer.json or step-* directories)")
    return latest


def analyze_checkpoint(path: str | Path) -> dict:
    """Summary of a checkpoint: step, config, logged trajectory, grokking stages, controllers."""
    path = resolve_checkpoint(path)
    trainer = read_trainer_state(path)
    controllers = read_json(path / "controllers.json")
    history = trainer.get("history", [])
    geometry = controllers.get("geometry", {})
    return {
        "checkpoint": str(path),
        "step": trainer["step"],
        "config": trainer.get("config", {}),
        "history": history,
        "last": history[-1] if history else {},
        "last_eval": trainer.get("last_eval", {}),
        "stages": geometry.get("stages", []),
        "intrinsic_dimension": geometry.get("ids", {}),
        "curriculum_levels": controllers.get("edge", {}).get("levels", {}),
        "dream_cycles": controllers.get("dreams", {}).get("cycles", []),
        "controllers": {name: _describe_tensors(state) for name, state in controllers.items()},
    }


def format_analysis(analysis: dict) -> str:
    """Human-readable report of :func:`analyze_checkpoint`'s result."""
    lines = [f"checkpoint {analysis['checkpoint']} at step {analysis['step']}"]
    evaluation = analysis["last_eval"]
    if evaluation:
        lines.append(f"  train acc {evaluation['train_acc']:.3f}  val acc {evaluation['val_acc']:.3f}  "
                     f"val loss {evaluation['val_loss']:.3f}")
    lines.append("  trajectory (step: loss, val acc):")
    for record in analysis["history"]:
        if "eval/val_acc" in record:
            lines.append(f"    {record['step']:>7}: {record.get('loss', float('nan')):.4f}  {record['eval/val_acc']:.3f}")
    if analysis["stages"]:
        lines.append("  grokking stages: " + ", ".join(f"{s}@{stage}" for s, stage in analysis["stages"]))
    if analysis["curriculum_levels"]:
        lines.append("  curriculum levels: " + ", ".join(f"{f}={v}" for f, v in analysis["curriculum_levels"].items()))
    for cycle in analysis["dream_cycles"][-5:]:
        lines.append(f"  dream @{cycle['step']}: buffer acc {cycle['buffer_acc_before']:.3f} -> "
                     f"{cycle['buffer_acc_after']:.3f}, self-samples {cycle['self_accepted']}/{cycle['self_sampled']}")
    for name, state in analysis["controllers"].items():
        lines.append(f"  controller {name}: {state}")
    return "\n".join(lines)


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in history if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def write_plots(analysis: dict, out_dir: str | Path) -> list[Path]:
    """One PNG per panel that has data: loss, accuracy, geometry, curriculum, grokfast, dreams."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    history = analysis["history"]
    keys = sorted({k for r in history for k in r})
    panels = {
        "loss": [k for k in ("loss", "eval/train_loss", "eval/val_loss") if k in keys],
        "accuracy": [k for k in keys if k in ("eval/train_acc", "eval/val_acc") or k.startswith("eval/val_family/")],
        "geometry": [k for k in keys if k.startswith("geometry/id/")],
        "curriculum": [k for k in keys if k.startswith("edge/")],
        "grokfast": [k for k in keys if k.startswith("grokfast/") or k == "grad_norm"],
        "dreams": [k for k in ("dream/buffer_acc_before", "dream/buffer_acc_after", "dream/buffer_loss") if k in keys],
    }
    written = []
    for name, series in panels.items():
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in series:
            ax.plot(*_series(history, key), label=key)
        if name == "geometry":
            previous = None
            for step, stage in analysis["stages"]:  # mark stage changes only
                if stage != previous:
                    ax.axvline(step, color="grey", alpha=0.3)
                    ax.annotate(stage, (step, ax.get_ylim()[1]), rotation=90, fontsize=7, va="top")
                previous = stage
        ax.set_xlabel("step")
        ax.set_title(name)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
