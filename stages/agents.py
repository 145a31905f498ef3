"""Stage `agents`: tools over MCP, a surprise-gated memory and an ADAS search, on the specialized model.

Reads params `agents`; fine-tunes `models/specialized/` to call the MCP calculator and writes that
tool model to `models/agents/` (an HF directory); measures the tool arms (no tool, MCP, a wrong
tool, an oracle call) and the memory arms (gated writes, writes off, every write, random writes,
over seeds); searches agent designs on validation items (archive saved after every generation in
`checkpoints/agents/`, persist: a killed run resumes) and compares the best discovered design
with the best hand-written one on the test split. Writes `agents/best.json`,
`agents/archive.json` and `metrics/agents.json`.
"""

import argparse

from forgelib.agents.run import run_agents
from forgelib.config import load_section
from forgelib.runtime import PIECE_THREADS, stage


@stage(threads=PIECE_THREADS)
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--input", default="models/specialized")
    parser.add_argument("--out", default="models/agents")
    parser.add_argument("--agents", default="agents")
    parser.add_argument("--state", default="checkpoints/agents")
    parser.add_argument("--metrics", default="metrics/agents.json")
    args = parser.parse_args()
    cfg = load_section("agents", args.params)
    run_agents(cfg, data_dir=args.data, input_dir=args.input, out_dir=args.out, agents_dir=args.agents,
               state_dir=args.state, metrics_path=args.metrics)
    return args.metrics


if __name__ == "__main__":
    main()
