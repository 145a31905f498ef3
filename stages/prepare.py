"""Stage `prepare`: generate the task datasets and the character tokenizer.

Reads params `prepare`; writes `data/` (tasks/<task> via save_to_disk, tokenizer/) and
`metrics/prepare.json` (split sizes and levels).
"""

import argparse

from forgelib.config import load_section
from forgelib.data.prepare import prepare
from forgelib.runtime import stage


@stage
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data")
    parser.add_argument("--metrics", default="metrics/prepare.json")
    args = parser.parse_args()
    prepare(load_section("prepare", args.params), args.out, args.metrics)
    return args.metrics


if __name__ == "__main__":
    main()
