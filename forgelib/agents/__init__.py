"""Phase 3b, agents: tools over MCP, a surprise-gated memory, and the agent designs that use them.

- :mod:`forgelib.agents.calculator`: the allowlist integer evaluator behind the ``calculate`` tool.
- :mod:`forgelib.agents.mcp_server` / :mod:`forgelib.agents.mcp_client`: the MCP server that
  ``forge mcp serve`` runs over stdio, and a synchronous client session for it.
- :mod:`forgelib.agents.toolcall`: the tool-call format a character-level model emits, and the
  runtime that stops at a call, executes it and lets the model continue.
- :mod:`forgelib.agents.tooldata` / :mod:`forgelib.agents.tool_arms`: tool-use training data from
  the task suite, and the control arms that show whether a tool-trained model uses its tool.

Submodules are imported where used: the server must start without torch.
"""
