"""Stage `train`: the Forge training loop (Grokfast, curriculum, geometry, self-model, dreams).

Reads params `train`; trains `models/evolved/` into `models/trained/`; checkpoints to
`checkpoints/train/` (persist: a killed run resumes); writes `metrics/train.json` (test mean of
the trained model and of its input) and dvclive curves under `metrics/train/`.
"""

import argparse

from forgelib.config import load_section
from forgelib.runtime import stage
from forgelib.train.run import run_train


@stage
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--input", default="models/evolved")
    parser.add_argument("--out", default="models/trained")
    parser.add_argument("--checkpoints", default="checkpoints/train")
    parser.add_argument("--metrics", default="metrics/train.json")
    parser.add_argument("--plots", default="metrics/train")
    args = parser.parse_args()
    run_train(load_section("train", args.params), data_dir=args.data, input_dir=args.input, out_dir=args.out,
              checkpoint_dir=args.checkpoints, metrics_dir=args.plots, metrics_path=args.metrics)
    return args.metrics


if __name__ == "__main__":
    main()
