"""dvclive logging shared by every training loop: one ``Live`` per run directory.

``dvcyaml=None`` because plots are declared once in ``dvc.yaml`` (DVC owns the pipeline file),
and ``save_dvc_exp=False`` because stages run inside ``dvc repro``/``dvc exp run`` already.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def live_logger(directory: str | Path | None, *, resume: bool = False) -> Iterator[Callable[[int, dict], None]]:
    """Yield ``log(step, {name: value})``; a no-op when ``directory`` is None."""
    if directory is None:
        yield lambda step, row: None
        return
    from dvclive import Live

    with Live(dir=str(directory), dvcyaml=None, save_dvc_exp=False, resume=resume, report=None) as live:

        def log(step: int, row: dict) -> None:
            live.step = step
            for name, value in row.items():
                if name != "step" and isinstance(value, (int, float)):
                    live.log_metric(name, float(value))
            live.next_step()

        yield log
