"""MCP over stdio: server start-up, per-call latency, and the tool-use arms.

    python bench/mcp.py --json                      # latency (~15 s) and the arms (~4 CPU-minutes)
    python bench/mcp.py --latency-only --calls 200  # latency only
    python bench/mcp.py --model models/trained --out-model /tmp/agents --out metrics/mcp_bench.json

Start-up is the wall time from spawning the server to a completed ``initialize`` handshake, for
both entry points: ``python -m forgelib.agents.mcp_server`` (no torch import) and ``forge mcp
serve`` (the CLI imports torch before any command). Per call: ``calculate`` round trips over one
open session (the first call is reported apart from the median and p90 of the rest), and one
``run_python`` call (a fresh sandboxed interpreter). The arms are
:func:`forgelib.agents.tool_arms.run_tool_arms`: exact match beyond the trained operand lengths
for no tool, the MCP tool, a wrong tool and an oracle call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This file is named mcp.py: with its own folder first on sys.path, `import mcp` would find it
# instead of the SDK.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from forgelib.agents.mcp_client import McpClient, forge_command, module_command  # noqa: E402


def latency(command: list[str], calls: int) -> dict:
    with McpClient(command) as client:
        first = client.call("calculate", {"expression": "50*60 % 97"})
        assert (first.text, first.is_error) == ("90", False), first
        seconds = []
        for i in range(calls):
            reply = client.call("calculate", {"expression": f"({i}+37)%97"})
            assert reply.text == str((i + 37) % 97), reply
            seconds.append(reply.seconds)
        refused = client.call("calculate", {"expression": "2**100000"})
        python = client.call("run_python", {"code": "print(1+1)"})
        python_again = client.call("run_python", {"code": "print(2+2)"})
        ordered = sorted(seconds)
        return {
            "command": " ".join(Path(command[0]).name if i == 0 else a for i, a in enumerate(command)),
            "startup_s": round(client.startup_s, 3),
            "first_call_ms": round(1000 * first.seconds, 2),
            "calls": calls,
            "median_ms": round(1000 * statistics.median(ordered), 3),
            "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 3),
            "refused_call_ms": round(1000 * refused.seconds, 2),
            "run_python_first_s": round(python.seconds, 3),
            "run_python_s": round(python_again.seconds, 3),
        }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="calculate calls timed per session")
    parser.add_argument("--latency-only", action="store_true", help="skip the tool-use arms")
    parser.add_argument("--model", default="models/trained", help="input model of the arms")
    parser.add_argument("--data", default="data", help="prepared data directory")
    parser.add_argument("--out-model", default=None, help="where the tool-trained model goes (default: a temp dir)")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps of each twin (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the result JSON here")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)

    result = {"latency": [latency(module_command(), args.calls), latency(forge_command(), args.calls)]}
    if not args.latency_only:
        import tempfile

        from forgelib.agents.tool_arms import run_tool_arms
        from forgelib.runtime import configure_torch

        configure_torch()
        overrides = {"seed": args.seed, **({"steps": args.steps} if args.steps else {})}
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            arms = run_tool_arms(args.model, data_dir=args.data, out_model_dir=args.out_model or Path(tmp) / "agents",
                                 **overrides)
            arms["details"]["wall_s"] = round(time.perf_counter() - started, 1)
        result["arms"] = arms
    if args.out:
        from forgelib.io import write_json

        write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result["latency"]:
            print(f"{row['command']}: start-up {row['startup_s']} s, calculate median {row['median_ms']} ms "
                  f"(p90 {row['p90_ms']} ms, first {row['first_call_ms']} ms), run_python {row['run_python_s']} s")
        if "arms" in result:
            d = result["arms"]["details"]
            print("beyond-length exact match:", {k: round(v, 3) for k, v in d["beyond_length"].items()})
            print("in-length exact match:   ", {k: round(v, 3) for k, v in d["in_length"].items()})
            print("call-parse rate:", d["call_parse_rate"], "argument correct:", d["argument_correct"])
    return result


if __name__ == "__main__":
    main()
