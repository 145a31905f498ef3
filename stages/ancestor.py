"""Stage `ancestor`: build and pretrain the ancestor on every task, or import one (base.source).

Reads params `base`; writes `models/base/ancestor/` (HF layout) and dvclive curves under
`metrics/ancestor/`.
"""

import argparse

from forgelib.config import load_section
from forgelib.runtime import stage
from forgelib.base.build import build_ancestor


@stage
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--out", default="models/base/ancestor")
    parser.add_argument("--metrics", default="metrics/ancestor")
    args = parser.parse_args()
    build_ancestor(load_section("base", args.params), args.data, args.out, args.metrics)
    return f"{args.metrics}/metrics.json"  # dvclive's summary; the stage's cost goes there too


if __name__ == "__main__":
    main()
