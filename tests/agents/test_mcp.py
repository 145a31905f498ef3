"""Forge's MCP server: the calculator's allowlist, and real client sessions over stdio and in memory.

The stdio tests start ``forge mcp serve`` exactly as a user would and talk to it with the SDK's
standard ``ClientSession``; the raw-pipe test checks that stdout carries nothing but JSON-RPC.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forgelib.agents.calculator import MAX_DIGITS, CalculatorError, calculate
from forgelib.agents.mcp_client import McpClient, forge_command, module_command
from forgelib.agents.mcp_server import TOOL_NAMES, build_server
from forgelib.errors import ForgeError

FORGE = forge_command()[0]
DISALLOWED = ["__import__('os')", "(1).real", "x+1", "2**100000", "open('f')",
              "__import__('os').system('touch pwned')", "[1, 2]", "1.5", "'a'*9", "1/2", "True+1",
              "(lambda: 1)()", "9" * 150, "10**60*10**60"]


# -- the calculator -----------------------------------------------------------------------------

@pytest.mark.parametrize("expression, value", [
    ("50*60 % 97", 90), ("(62+37)%97", 2), ("62+37%97", 99), ("96+39", 135), ("-7//2", -4), ("-7%3", 2),
    ("2**10", 1024), ("abs(-5)*max(1, 9, 3)-min(4, 2)", 43), ("((((1+2))))*-3", -9), ("+5", 5),
    ("1234*5678", 7006652), ("(-2)**3", -8),
])
def test_calculator_matches_hand_computed_values(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("expression", DISALLOWED + ["", "1+", "5%0", "2**-1", "min()", "abs(1, 2)",
                                                     "max(*[1])", "abs(x=1)", "7**1024"])
def test_calculator_refuses_everything_outside_the_allowlist(expression):
    started = time.perf_counter()
    with pytest.raises(CalculatorError):
        calculate(expression)
    assert time.perf_counter() - started < 0.05


def test_calculator_caps_result_size_before_computing():
    assert len(str(calculate(f"10**{MAX_DIGITS - 1}"))) == MAX_DIGITS
    with pytest.raises(CalculatorError, match="digits"):
        calculate(f"10**{MAX_DIGITS}")
    with pytest.raises(CalculatorError, match="exceeds the cap"):
        calculate("3**9999999999")
    with pytest.raises(CalculatorError, match="characters"):
        calculate("1+" * 400 + "1")


# -- a standard client session against `forge mcp serve` over stdio ----------------------------

async def _stdio_session(cwd: Path) -> dict:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=FORGE, args=["mcp", "serve"], cwd=str(cwd),
                                   env={"FORGE_NUM_THREADS": "1"})
    out: dict = {"refused": {}}
    with open(cwd.parent / "server-stderr.txt", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                out["tools"] = [tool.name for tool in (await session.list_tools()).tools]
                result = await session.call_tool("calculate", {"expression": "50*60 % 97"})
                out["calculate"] = (result.content[0].text, result.is_error)
                for expression in DISALLOWED:
                    started = time.perf_counter()
                    result = await session.call_tool("calculate", {"expression": expression})
                    out["refused"][expression] = (result.is_error, time.perf_counter() - started, result.content[0].text)
                result = await session.call_tool("memory_lookup", {"query": "k1"})
                out["memory"] = (result.content[0].text, result.is_error)
                result = await session.call_tool("calculate", {"expression": "1234*5678"})
                out["after"] = result.content[0].text
    return out


@pytest.fixture(scope="module")
def stdio_results(tmp_path_factory):
    work = tmp_path_factory.mktemp("mcp") / "cwd"
    work.mkdir()
    results = asyncio.run(_stdio_session(work))
    results["cwd_after"] = sorted(os.listdir(work))
    results["stderr"] = (work.parent / "server-stderr.txt").read_text()
    return results


def test_forge_mcp_serve_lists_the_three_tools(stdio_results):
    assert sorted(stdio_results["tools"]) == sorted(TOOL_NAMES)


def test_calculate_over_stdio_returns_90(stdio_results):
    assert stdio_results["calculate"] == ("90", False)


def test_disallowed_expressions_are_quick_tool_errors_with_no_effect(stdio_results):
    for expression, (is_error, seconds, text) in stdio_results["refused"].items():
        assert is_error, expression
        assert seconds < 1.0, (expression, seconds)
        assert "not allowed" in text or "cap" in text or "valid" in text or "integer" in text, text
    assert stdio_results["cwd_after"] == []  # no file 'f', no 'pwned'
    assert stdio_results["after"] == "7006652"  # the server still answers


def test_memory_lookup_without_memory_is_a_tool_error(stdio_results):
    text, is_error = stdio_results["memory"]
    assert is_error and "memory is empty" in text


def test_server_logs_go_to_stderr(stdio_results):
    assert "[forge mcp] serving calculate, run_python, memory_lookup" in stdio_results["stderr"]


def test_stdout_carries_only_json_rpc(tmp_path):
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "calculate", "arguments": {"expression": "50*60 % 97"}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "calculate", "arguments": {"expression": "print('leak')"}}},
    ]
    proc = subprocess.Popen([sys.executable, "-m", "forgelib.agents.mcp_server"], cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write("".join(json.dumps(r) + "\n" for r in requests).encode())
    proc.stdin.flush()
    # Raw reads of the pipe: a buffered readline() could pull every response into Python's buffer
    # at once, after which select() would wait for more until the deadline.
    out, deadline = b"", time.monotonic() + 60
    while out.count(b'"id"') < 3 and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1.0)[0]:
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            out += chunk
    proc.stdin.close()  # end of session: the server exits
    rest, stderr = proc.stdout.read(), proc.stderr.read().decode()
    proc.wait(timeout=30)
    lines = (out + rest).decode().splitlines()
    messages = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    assert len(messages) == len([line for line in lines if line.strip()]) >= 3
    assert all(m["jsonrpc"] == "2.0" for m in messages)
    by_id = {m["id"]: m for m in messages if "id" in m}
    assert by_id[2]["result"]["content"][0]["text"] == "90"
    assert by_id[3]["result"]["isError"] is True
    assert "serving" in stderr and not any("leak" in line for line in lines)


# -- the synchronous client: run_python, memory, startup failures -------------------------------

@pytest.fixture(scope="module")
def client():
    with McpClient(module_command()) as tools:
        yield tools


def test_client_reports_startup_and_per_call_latency(client):
    assert 0 < client.startup_s < 30
    text, is_error, seconds = client.call("calculate", {"expression": "(30*19)%97"})
    assert (text, is_error) == ("85", False) and 0 < seconds < 1.0
    assert sorted(client.list_tools()) == sorted(TOOL_NAMES)


def test_run_python_runs_in_the_sandbox(client):
    text, is_error, _ = client.call("run_python", {"code": "print(1+1)"})
    assert (text.strip(), is_error) == ("2", False)
    text, is_error, _ = client.call("run_python", {"code": "import socket; socket.socket()"})
    assert is_error and text.startswith("Error executing tool run_python: failed")


def test_a_bad_memory_path_fails_at_startup_naming_it(tmp_path):
    with pytest.raises(ForgeError, match="no memory saved there"):
        McpClient(memory=tmp_path / "missing").start()


class _Memory:
    def lookup(self, query: str, k: int = 1):
        return [(f"{query}->v{i}", 1.0 / (i + 1)) for i in range(k)]


async def _in_memory_calls() -> dict:
    from mcp import Client

    from forgelib.eval.sandbox import SandboxConfig

    server = build_server(memory=_Memory(), sandbox=SandboxConfig(timeout_s=1.0, cpu_s=1, memory_mb=256))
    async with Client(server) as session:
        memory = await session.call_tool("memory_lookup", {"query": "k7", "k": 2})
        bad_k = await session.call_tool("memory_lookup", {"query": "k7", "k": 0})
        started = time.perf_counter()
        loop = await session.call_tool("run_python", {"code": "while True:\n    pass\n"})
        return {"memory": memory, "bad_k": bad_k, "loop": loop, "loop_s": time.perf_counter() - started}


def test_memory_lookup_and_sandbox_timeout_in_memory():
    out = asyncio.run(_in_memory_calls())
    assert json.loads(out["memory"].content[0].text) == [{"value": "k7->v0", "score": 1.0},
                                                         {"value": "k7->v1", "score": 0.5}]
    assert out["bad_k"].is_error
    assert out["loop"].is_error and "timeout" in out["loop"].content[0].text
    assert out["loop_s"] < 10


def test_memory_lookup_reads_a_saved_episodic_memory(tmp_path):
    memory_module = pytest.importorskip("forgelib.agents.memory")
    memory = memory_module.EpisodicMemory(capacity=4)
    memory.write("key:alpha", "value-a")
    memory.write("key:omega", "value-z")
    memory.save(tmp_path / "memory")
    with McpClient(memory=tmp_path / "memory") as tools:
        text, is_error, _ = tools.call("memory_lookup", {"query": "key:omega", "k": 2})
    hits = json.loads(text)
    assert not is_error and [h["value"] for h in hits] == ["value-z", "value-a"]
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5) and hits[1]["score"] < 1.0
