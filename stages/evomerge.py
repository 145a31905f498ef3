"""Stage `evomerge`: evolve a merge recipe of the specialists around the ancestor.

Reads params `evomerge` and `base.specialists`; writes `models/evolved/` (with recipe.yaml,
replayable with `forge merge`), `metrics/evomerge.json`, fitness plots under
`metrics/evomerge/`, and resumable search state in `checkpoints/evomerge/` (persist).
"""

import argparse

from forgelib.config import load_section
from forgelib.merge.run import run_evomerge
from forgelib.runtime import PIECE_THREADS, stage


@stage(threads=PIECE_THREADS)
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--models", default="models/base")
    parser.add_argument("--out", default="models/evolved")
    parser.add_argument("--state", default="checkpoints/evomerge")
    parser.add_argument("--metrics", default="metrics/evomerge.json")
    parser.add_argument("--plots", default="metrics/evomerge")
    args = parser.parse_args()
    specialists = load_section("base", args.params).specialists
    run_evomerge(
        load_section("evomerge", args.params),
        data_dir=args.data,
        base_model=f"{args.models}/ancestor",
        parents={name: f"{args.models}/{name}" for name in specialists},
        out_dir=args.out,
        state_dir=args.state,
        metrics_path=args.metrics,
        plots_dir=args.plots,
    )
    return args.metrics


if __name__ == "__main__":
    main()
