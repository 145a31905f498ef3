"""Model-side tool calls: the format a character-level model writes, and the runtime that runs it.

**The format.** The embedded default's alphabet is ``0-9 a-z + - * % = : ( ) [ ]`` and space,
so there is no ``<calc>...</calc>``. A call is the tool's short name and its argument in square
brackets, the tool's reply follows, and ``=`` closes it, echoing how every task prompt ends::

    62+37%97=[calc:(62+37)%97]2=2<eos>
    ^prompt  ^model writes   ^ ^model answers
                   runtime: 2=

The argument of ``calc`` is a Python expression (``(62+37)%97``, never the task's own
``62+37%97``) for the ``calculate`` tool. Square brackets never occur inside an argument, so the
first ``]`` closes the call. The runtime writes the tool's text, or :data:`ERROR_TEXT` for a tool
error or a reply outside the alphabet, then :data:`RESULT_END`.

**The runtime** (:func:`run_with_tools`): generate greedily from each prompt; cut at the first
``]``; parse the call; run it through ``call_tool`` (the MCP client, or an injected tool for
the control arms); append result and ``=``; generate again, up to ``max_calls`` calls. A row
whose text has no ``]`` (it answered directly, or hit ``<eos>``) is finished; a ``]`` without a
well-formed call finishes the row too, and counts as a parse failure. The answer is what follows
the last ``=`` the runtime wrote (the whole text when no call ran). Rows are batched: each round
generates for every unfinished row at once, which equals per-row decoding because greedy decoding
of one row does not depend on the others.

**A real chat model.** SmolLM2's chat template (ChatML) has no tool branch; SmolLM2-1.7B-Instruct
documents a system-prompt convention instead (its ``instructions_function_calling.md``): the tools
listed as JSON schemas inside ``<tools>...</tools>``, and the model replying
``<tool_call>[{"name": "calculate", "arguments": {"expression": "..."}}]</tool_call>``. For that
model the runtime would stop at ``</tool_call>``, parse the JSON list, call each tool over MCP and
return the results as a ``tool`` message through the chat template. Not built here: Forge's
default model has no such tokens and no chat template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

from forgelib.agents.mcp_client import ToolReply
from forgelib.data.tokenizer import ALPHABET

OPEN, CLOSE, SEP, RESULT_END = "[", "]", ":", "="
ERROR_TEXT = "err"
"""Written in place of a failed or unwritable tool reply (the model never sees raw error text)."""
TOOL_ALIASES = {"calc": "calculate"}
"""The short names a model writes -> the MCP tool they call, and that tool's argument name."""
TOOL_ARGUMENT = {"calculate": "expression"}
_CALL = re.compile(r"\[([a-z]+):([^\[\]]*)\]$")
_RESULT_CHARS = set(ALPHABET) - {OPEN, CLOSE, RESULT_END}


class ToolCall(NamedTuple):
    alias: str
    """The name as written (``calc``)."""
    argument: str

    @property
    def tool(self) -> str:
        """The MCP tool it calls."""
        return TOOL_ALIASES[self.alias]


ToolFn = Callable[[ToolCall], ToolReply]
"""Runs one call: the MCP client (:func:`mcp_tool`) or a stand-in for the control arms."""
GenerateFn = Callable[[Sequence[str]], list[str]]
"""Greedy continuations of text prefixes (to ``<eos>``, or to a ``]``; text past it is ignored)."""


def format_call(argument: str, alias: str = "calc") -> str:
    """``[calc:ARG]``; refuses text the model could not write or the parser could not read back."""
    if alias not in TOOL_ALIASES:
        raise ValueError(f"unknown tool alias {alias!r}; known: {', '.join(TOOL_ALIASES)}")
    bad = sorted(set(argument) - (set(ALPHABET) - {OPEN, CLOSE}))
    if bad or not argument:
        raise ValueError(f"tool argument {argument!r} is empty or has characters outside the call alphabet: {bad}")
    return f"{OPEN}{alias}{SEP}{argument}{CLOSE}"


def parse_call(segment: str) -> ToolCall | None:
    """The call that ``segment`` ends with (``...[calc:ARG]``), or None when it is malformed or
    names an unknown tool."""
    start = segment.rfind(OPEN)
    match = _CALL.match(segment[start:]) if start >= 0 else None
    if match is None or match.group(1) not in TOOL_ALIASES or not match.group(2):
        return None
    return ToolCall(match.group(1), match.group(2))


def format_result(reply: ToolReply) -> str:
    """What the runtime appends after a call: the reply's text (or ``err``) and ``=``."""
    text = reply.text.strip()
    ok = not reply.is_error and text and set(text) <= _RESULT_CHARS
    return f"{text if ok else ERROR_TEXT}{RESULT_END}"


@dataclass
class CallRecord:
    call: ToolCall
    reply: ToolReply


@dataclass
class Trace:
    """One prompt's run: everything generated or appended after the prompt, and the calls."""

    prompt: str
    text: str = ""
    calls: list[CallRecord] = field(default_factory=list)
    malformed_call: bool = False
    """A ``]`` was written but no well-formed call preceded it."""
    answer_from: int = 0
    """Where the answer starts in ``text``: just after the last result the runtime appended."""

    @property
    def answer(self) -> str:
        return self.text[self.answer_from :].strip()


def run_with_tools(prompts: Sequence[str], generate: GenerateFn, call_tool: ToolFn, *, max_calls: int = 1,
                   prefixes: Sequence[str] | None = None) -> list[Trace]:
    """Answer every prompt, executing the tool calls the model writes (module docstring).

    ``prefixes``: text already written after each prompt (the oracle arm injects a call and its
    result there); it becomes the start of the trace's text.
    """
    traces = [Trace(p, text=prefixes[i] if prefixes else "") for i, p in enumerate(prompts)]
    for trace in traces:
        trace.answer_from = len(trace.text)
    active = list(range(len(traces)))
    for _ in range(max_calls + 1):
        if not active:
            break
        continuations = generate([traces[i].prompt + traces[i].text for i in active])
        still = []
        for i, continuation in zip(active, continuations):
            trace = traces[i]
            cut = continuation.find(CLOSE)
            if cut < 0 or len(trace.calls) >= max_calls:
                trace.text += continuation
                continue
            segment = continuation[: cut + 1]
            call = parse_call(segment)
            if call is None:
                trace.malformed_call = True
                trace.text += continuation
                continue
            reply = call_tool(call)
            trace.calls.append(CallRecord(call, reply))
            trace.text += segment + format_result(reply)
            trace.answer_from = len(trace.text)
            still.append(i)
        active = still
    return traces


def mcp_tool(client) -> ToolFn:
    """Calls through an open :class:`forgelib.agents.mcp_client.McpClient`."""

    def call(tool_call: ToolCall) -> ToolReply:
        return client.call(tool_call.tool, {TOOL_ARGUMENT[tool_call.tool]: tool_call.argument})

    return call


def hf_generate(model, tokenizer, *, max_new_tokens: int, batch_size: int = 256) -> GenerateFn:
    """Greedy continuations from a Hugging Face causal LM, each stopping at ``<eos>`` or ``]``.

    Left-padded batches as in :func:`forgelib.eval.generate.greedy_answers`; a row that writes
    ``]`` is finished at once (the runtime takes over). The budget never runs past the model's
    ``max_position_embeddings``.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    close_id = tokenizer.convert_tokens_to_ids(CLOSE)
    limit = getattr(model.config, "max_position_embeddings", None)

    class StopAtClose(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return input_ids[:, -1] == close_id

    @torch.no_grad()
    def generate(prefixes: Sequence[str]) -> list[str]:
        tokenizer.padding_side = "left"
        was_training = model.training
        model.eval()
        out: list[str] = []
        for start in range(0, len(prefixes), batch_size):
            enc = tokenizer(list(prefixes[start : start + batch_size]), return_tensors="pt", padding=True)
            budget = max_new_tokens if limit is None else min(max_new_tokens, limit - enc["input_ids"].shape[1])
            if budget <= 0:
                out += [""] * enc["input_ids"].shape[0]
                continue
            gen = model.generate(**enc, max_new_tokens=budget, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id, stopping_criteria=StoppingCriteriaList([StopAtClose()]))
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        model.train(was_training)
        return out

    return generate
