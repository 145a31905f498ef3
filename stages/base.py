"""Stage `base`: evaluate the ancestor and every specialist on the held-out test split.

Reads params `base`; writes `metrics/base.json`:
{"models": {NAME: {"tasks", "families", "mean", "perplexity"}}, "specialists": {NAME: FAMILY}, ...}.
"""

import argparse

from forgelib.config import load_section
from forgelib.runtime import stage
from forgelib.base.evaluation import evaluate_base
from forgelib.io import write_json


@stage
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--models", default="models/base")
    parser.add_argument("--out", default="metrics/base.json")
    args = parser.parse_args()
    write_json(args.out, evaluate_base(load_section("base", args.params), args.data, args.models))
    return args.out


if __name__ == "__main__":
    main()
