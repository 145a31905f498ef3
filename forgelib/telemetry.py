"""dvclive logging shared by every training loop: one ``Live`` per run directory.

``dvcyaml=None`` because plots are declared once in ``dvc.yaml`` (DVC owns the pipeline file),
and ``save_dvc_exp=False`` because stages run inside ``dvc repro``/``dvc exp run`` already.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator


def make_live(directory: str | Path, *, resume: bool = False):
    """A dvclive ``Live`` writing metrics and plots under ``directory``.

    Outside a DVC pipeline (no ``DVC_ROOT``: tests, benchmarks, the CLI) dvclive is kept away
    from the enclosing repository: its ``get_dvc_repo()`` would otherwise run ``dvc init`` in a
    git repository without DVC and fail in one without commits. Only experiment bookkeeping
    needs the repository, and that is off; the metric files are the same either way.
    """
    import os
    from unittest import mock

    from dvclive import Live

    kwargs = dict(dir=str(directory), dvcyaml=None, save_dvc_exp=False, resume=resume, report=None)
    if os.environ.get("DVC_ROOT"):
        return Live(**kwargs)
    with mock.patch("dvclive.live.get_dvc_repo", return_value=None):
        return Live(**kwargs)


@contextlib.contextmanager
def live_logger(directory: str | Path | None, *, resume: bool = False) -> Iterator[Callable[[int, dict], None]]:
    """Yield ``log(step, {name: value})``; a no-op when ``directory`` is None."""
    if directory is None:
        yield lambda step, row: None
        return
    with make_live(directory, resume=resume) as live:

        def log(step: int, row: dict) -> None:
            live.step = step
            for name, value in row.items():
                if name != "step" and isinstance(value, (int, float)):
                    live.log_metric(name, float(value))
            live.next_step()

        yield log
