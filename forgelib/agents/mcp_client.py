"""A synchronous MCP client: one stdio session with Forge's tool server, usable from plain code.

The model-side runtime and the benchmarks are synchronous (torch loops), the MCP SDK is async.
:class:`McpClient` starts the server as a subprocess and runs one :class:`mcp.ClientSession` in
a background thread that owns its own event loop; :meth:`McpClient.call` submits a
``tools/call`` to that loop and waits for the reply. The session's context managers are entered
and left by the same task, as anyio requires, so shutdown is the SDK's own (close stdin, wait,
then kill the process group).

The server's stderr goes to a temporary file (:meth:`McpClient.stderr_text`): a pipe nobody
reads would block a chatty server, and a start-up failure is reported with that text.

    with McpClient() as tools:
        text, is_error, seconds = tools.call("calculate", {"expression": "50*60 % 97"})
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from forgelib.errors import ForgeError


class ToolReply(NamedTuple):
    text: str
    """The text content of the result (a tool error's message when ``is_error``)."""
    is_error: bool
    seconds: float
    """Wall time of the round trip, as this client saw it."""


def module_command(memory: str | Path | None = None) -> list[str]:
    """``python -m forgelib.agents.mcp_server``: the server without the CLI's torch import."""
    return [sys.executable, "-m", "forgelib.agents.mcp_server", *(["--memory", str(memory)] if memory else [])]


def forge_command(memory: str | Path | None = None) -> list[str]:
    """``forge mcp serve``, the documented entry point (the CLI imports torch first)."""
    forge = shutil.which("forge") or str(Path(sys.executable).with_name("forge"))
    return [forge, "mcp", "serve", *(["--memory", str(memory)] if memory else [])]


def _server_env() -> dict[str, str]:
    """What the server inherits beyond the SDK's safe defaults (PATH, HOME, ...)."""
    keep = ("PYTHONPATH", "TMPDIR", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k.startswith("FORGE_") or k in keep}


class McpClient:
    """A context manager holding one MCP stdio session; see the module docstring."""

    def __init__(self, command: Sequence[str] | None = None, *, memory: str | Path | None = None,
                 cwd: str | Path | None = None, startup_timeout_s: float = 60.0, call_timeout_s: float = 60.0):
        if command is not None and memory is not None:
            raise ForgeError("McpClient: pass --memory inside `command`, or `memory` without a command, not both")
        self.command = list(command) if command is not None else module_command(memory)
        self.cwd = cwd
        self.startup_timeout_s = startup_timeout_s
        self.call_timeout_s = call_timeout_s
        self.startup_s: float | None = None
        """Seconds from spawning the server to a completed ``initialize`` handshake."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session = None
        self._stop: asyncio.Event | None = None
        self._errlog = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "McpClient":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if self._thread is not None:
            raise ForgeError("McpClient: already started")
        self._errlog = tempfile.TemporaryFile(mode="w+", prefix="forge-mcp-stderr-")
        ready: concurrent.futures.Future = concurrent.futures.Future()
        started = time.perf_counter()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name="forge-mcp-client", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout=self.startup_timeout_s)
        except Exception as exc:
            self.close()
            while isinstance(exc, BaseExceptionGroup) and exc.exceptions:  # anyio task groups wrap the cause
                exc = exc.exceptions[0]
            detail = str(exc) or type(exc).__name__
            raise ForgeError(f"MCP server `{' '.join(self.command)}` did not start: {detail}\n"
                             f"server stderr:\n{self.stderr_text()[-2000:]}") from None
        self.startup_s = time.perf_counter() - started

    def close(self) -> None:
        """End the session and stop the server (idempotent)."""
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop already ended (the server exited)
                pass
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._session = None

    def stderr_text(self) -> str:
        """Everything the server wrote to stderr so far."""
        if self._errlog is None or self._errlog.closed:
            return ""
        self._errlog.flush()
        self._errlog.seek(0)
        return self._errlog.read()

    def _thread_main(self, ready: concurrent.futures.Future) -> None:
        try:
            asyncio.run(self._session_main(ready))
        except BaseException as exc:  # reported through `ready` when start-up is still waiting
            if not ready.done():
                ready.set_exception(exc)

    async def _session_main(self, ready: concurrent.futures.Future) -> None:
        from mcp import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=self.command[0], args=self.command[1:], env=_server_env(),
                                       cwd=self.cwd)
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with stdio_client(params, errlog=self._errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                self._session = session
                ready.set_result(None)
                await self._stop.wait()

    # -- calls -------------------------------------------------------------------------------

    def _submit(self, coroutine, timeout_s: float):
        if self._session is None:
            coroutine.close()
            raise ForgeError("McpClient: no open session; use it as a context manager (with McpClient() as c: ...)")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=timeout_s)

    def list_tools(self) -> list[str]:
        """The names of the server's tools."""
        return [tool.name for tool in self._submit(self._session.list_tools(), self.call_timeout_s).tools]

    def call(self, name: str, arguments: dict[str, Any]) -> ToolReply:
        """Call tool ``name``; a tool failure comes back as ``is_error``, not as an exception."""
        started = time.perf_counter()
        result = self._submit(self._session.call_tool(name, arguments, read_timeout_seconds=self.call_timeout_s),
                              self.call_timeout_s + 5)
        text = "".join(getattr(block, "text", "") for block in result.content)
        return ToolReply(text, bool(result.is_error), time.perf_counter() - started)
