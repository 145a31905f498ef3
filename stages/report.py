"""Stage `report`: aggregate every phase's metrics and check the quality gates.

Reads params `report` and `gates`; writes `metrics/summary.json` and `metrics/summary.md`;
exits 2 naming each failed gate.
"""

import argparse

from forgelib.config import load_section
from forgelib.runtime import stage
from forgelib.report import build_report


@stage
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics", default="metrics")
    args = parser.parse_args()
    phases, gates = load_section("report", args.params).phases, load_section("gates", args.params)
    summary = build_report(phases, gates, args.metrics, f"{args.metrics}/summary.json", f"{args.metrics}/summary.md")
    print(f"all {len(summary['gates'])} gates passed")
    return f"{args.metrics}/summary.json"


if __name__ == "__main__":
    main()
