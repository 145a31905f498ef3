"""Stage `validate`: check every section of params.yaml before any stage may delete an output.

DVC removes a stage's outputs before it runs the stage's command, so a stage that validated only
its own section would lose its outputs (``data/``, ``metrics/prepare.json``, ...) to a typo. This
stage runs first: every other stage depends on its output, ``checkpoints/params.ok``. It tracks
the whole params file, so any edit reruns it; an invalid file makes it exit 2 naming the file and
the dotted key, and `dvc repro` stops before any other stage is touched. The output is declared
``persist`` (DVC does not delete it before running) and its content never depends on the params,
so a valid edit leaves it byte-identical and DVC reruns only the stages that read the edited keys.
"""

import argparse
from pathlib import Path

from forgelib.config import load_params
from forgelib.io import write_text_atomic
from forgelib.runtime import stage

STAMP = "params.yaml passed `forge validate`; every stage depends on this file.\n"


@stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="checkpoints/params.ok")
    args = parser.parse_args()
    load_params(args.params)
    out = Path(args.out)
    if not out.is_file() or out.read_text() != STAMP:
        write_text_atomic(out, STAMP)


if __name__ == "__main__":
    main()
