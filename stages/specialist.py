"""Stage `specialist@<name>`: fine-tune the ancestor on one task family (base.specialists).

Reads params `base`; writes `models/base/<name>/` and dvclive curves under
`metrics/specialist/<name>/`.
"""

import argparse

from forgelib.config import load_section
from forgelib.runtime import stage
from forgelib.base.build import build_specialist


@stage
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--ancestor", default="models/base/ancestor")
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", required=True)
    args = parser.parse_args()
    build_specialist(args.name, load_section("base", args.params), args.data, args.ancestor, args.out, args.metrics)
    return f"{args.metrics}/metrics.json"  # dvclive's summary; the stage's cost goes there too


if __name__ == "__main__":
    main()
