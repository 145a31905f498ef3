"""Forge's MCP server: ``calculate``, ``run_python`` and ``memory_lookup`` over stdio.

Built on the MCP 2.x SDK's :class:`mcp.server.mcpserver.MCPServer` (FastMCP is gone in 2.x).
``forge mcp serve [--memory PATH]`` and ``python -m forgelib.agents.mcp_server`` run the same
:func:`serve`. The protocol owns stdout: the SDK points fd 1 at stderr while it serves, and
every log line of ours goes to stderr.

The tools, and how they fail (a failure is a tool error, ``is_error`` true, with a message for
the caller; nothing is raised to the protocol layer):

- ``calculate(expression)``: :func:`forgelib.agents.calculator.calculate`; the text is the
  integer in decimal (``"50*60 % 97"`` gives ``90``). Expressions outside the allowlist or the
  size caps fail at once, before any arithmetic runs.
- ``run_python(code)``: the program runs in :mod:`forgelib.eval.sandbox` with HumanEval's
  limits (:data:`forgelib.eval.humaneval.SANDBOX`: 10 s wall, 5 s CPU, 512 MiB). The text is
  its stdout. A failing program, a blocked operation or a timeout is a tool error whose message
  starts with the status (``timeout``, ``failed``, ``error``) and ends with the stderr tail.
- ``memory_lookup(query, k=1)``: the ``k`` nearest entries of the episodic memory
  (:class:`forgelib.agents.memory.EpisodicMemory`) loaded from ``--memory``, as JSON
  ``[{"value": str, "score": float}, ...]``, best first. Without ``--memory`` the tool stays
  listed (clients see the same tool set) but every call is the tool error ``memory is empty``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from forgelib.errors import ForgeError

log = logging.getLogger("forge.mcp")

TOOL_NAMES = ("calculate", "run_python", "memory_lookup")
MAX_K = 32
"""Most memory entries one ``memory_lookup`` returns."""


def load_memory(path: str | Path):
    """The episodic memory saved at ``path`` (imported here so the server runs without it)."""
    path = Path(path)
    if not path.exists():
        raise ForgeError(f"--memory {path}: no memory saved there; pass the path an EpisodicMemory was saved to")
    try:
        from forgelib.agents.memory import EpisodicMemory
    except ImportError as exc:
        raise ForgeError(f"--memory {path}: the memory module is unavailable ({exc})") from None
    return EpisodicMemory.load(path)


def build_server(*, memory: Any = None, sandbox: Any = None) -> "MCPServer":
    """An MCPServer with Forge's three tools.

    ``memory``: an object with ``lookup(query, k) -> [(value, score), ...]`` (None: the memory is
    empty). ``sandbox``: a :class:`forgelib.eval.sandbox.SandboxConfig` for ``run_python``
    (None: HumanEval's limits, imported on the first call so start-up does not pay for torch).
    """
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from forgelib.agents.calculator import CalculatorError, calculate as evaluate, format_result

    server = MCPServer(
        "forge-tools",
        instructions="calculate: integer arithmetic; run_python: sandboxed Python; memory_lookup: episodic memory.",
        log_level="WARNING",
    )

    @server.tool(structured_output=False)
    def calculate(expression: str) -> str:
        """Evaluate integer arithmetic: literals, + - * // % **, unary -, parentheses, abs/min/max."""
        try:
            return format_result(evaluate(expression))
        except CalculatorError as exc:
            raise ToolError(str(exc)) from None

    @server.tool(structured_output=False)
    def run_python(code: str) -> str:
        """Run a Python program in Forge's sandbox (HumanEval's limits); returns its stdout."""
        from forgelib.eval.sandbox import run_python as run_sandboxed

        result = run_sandboxed(code, sandbox if sandbox is not None else _humaneval_limits())
        if not result.passed:
            raise ToolError(f"{result.status} after {result.duration_s:.1f} s: {result.stderr_tail.strip()[-1000:]}")
        return result.stdout_tail

    @server.tool(structured_output=False)
    def memory_lookup(query: str, k: int = 1) -> str:
        """The k stored entries nearest to the query, as JSON [{"value", "score"}], best first."""
        if memory is None:
            raise ToolError("memory is empty: the server was started without --memory")
        if not 1 <= k <= MAX_K:
            raise ToolError(f"k must be in 1..{MAX_K}, got {k}")
        hits = memory.lookup(query, k=k)
        return json.dumps([{"value": value, "score": float(score)} for value, score in hits])

    return server


def _humaneval_limits():
    from forgelib.eval.humaneval import SANDBOX

    return SANDBOX


def serve(memory_path: str | Path | None = None) -> None:
    """Serve the tools over stdio until the client closes stdin. Logs go to stderr."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="[forge mcp] %(message)s")
    logging.getLogger("mcp").setLevel(logging.WARNING)  # the SDK logs every tool error at INFO
    memory = load_memory(memory_path) if memory_path is not None else None
    server = build_server(memory=memory)
    where = f"memory {memory_path}" if memory_path is not None else "no memory"
    log.info(f"serving {', '.join(TOOL_NAMES)} over stdio ({where})")
    server.run("stdio")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m forgelib.agents.mcp_server", description=__doc__.splitlines()[0])
    parser.add_argument("--memory", type=Path, default=None, help="An EpisodicMemory saved by forgelib.agents.memory.")
    args = parser.parse_args(argv)
    try:
        serve(args.memory)
    except ForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
