"""Telemetry of the Forge loop: dvclive always, Weights & Biases when a project is set.

dvclive writes ``<metrics dir>/metrics.json`` (latest values) and one TSV per metric under
``<metrics dir>/plots/metrics/`` for ``dvc plots``. A resumed run replays the history stored in
its checkpoint first, so the plots of a killed-and-resumed run equal an uninterrupted run's.
W&B is imported only when asked for; without the package the run goes on with a message. Its
run directory is ``$WANDB_DIR/wandb/`` when that is set, else ``<metrics dir>/wandb/``; an
offline run (``train.wandb.mode: offline``) needs no network and uploads later with
``wandb sync``.

Outside a DVC pipeline (no ``DVC_ROOT`` in the environment: tests, benchmarks, the CLI) dvclive
is kept away from the enclosing repository: its ``get_dvc_repo()`` would otherwise run
``dvc init`` in any git repository without DVC and stage files there, and it fails in a git
repository without commits. Only experiment bookkeeping needs the repository, and that is off
(``save_dvc_exp=False``); the metric files are the same either way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping


def _numeric(record: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


class Telemetry:
    def __init__(self, metrics_dir: str | Path, *, config: Mapping[str, Any], wandb_project: str | None = None,
                 wandb_mode: str = "offline"):
        from forgelib.telemetry import make_live

        self.live = make_live(metrics_dir)
        self.wandb_run = None
        if wandb_project:
            try:
                import wandb
            except ImportError:
                print("train.wandb.project is set but wandb is not installed: skipping W&B logging "
                      "(pip install wandb to enable it; dvclive logging continues)", file=sys.stderr)
            else:
                # WANDB_DIR, when set, decides where the run directory goes (as wandb documents)
                self.wandb_run = wandb.init(project=wandb_project, mode=wandb_mode, config=dict(config),
                                            dir=os.environ.get("WANDB_DIR") or str(metrics_dir))

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        values = _numeric(record)
        self.live.step = step
        for name, value in values.items():
            self.live.log_metric(name, value)
        self.live.next_step()
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def close(self) -> None:
        self.live.end()
        if self.wandb_run is not None:
            self.wandb_run.finish()
