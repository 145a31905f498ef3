"""Does the model use its calculator? Four arms on arithmetic in and beyond the trained lengths.

Toolformer (Schick et al. 2023) teaches a model to call tools from self-labelled data; here the
calls are exact by construction (:mod:`forgelib.agents.tooldata`), so what is left to show is
that the model *uses* the tool, with controls:

- ``no_tool``: the input model fine-tuned on the same rows with direct answers, same steps, seed
  and batch order, answering directly. A fine-tuned twin rather than the input model itself, so
  the comparison is tool vs no tool at equal training (the input model, which never saw
  products or 3-4 digit operands, is reported too as ``input_model``).
- ``mcp``: the tool-trained model; its calls run through the real MCP server over stdio.
- ``wrong_tool``: the same model, but a counterfactual calculator answers each call with a wrong
  value (the true one plus a seeded 1..9): if the model copies the result, exact match collapses.
- ``oracle_call``: a perfect call and its true result are written for the model, which only has
  to copy: it separates forming the call from copying the result.

Test sets (seeded, disjoint from training): in-length: the suite's ``add`` (up to 2 digits),
``mod_add``, ``mod_mul`` test splits and generated 2-digit ``mul``; beyond: ``add``/``mul`` with
exactly 3 and 4-digit operands. The headline ``{"no_tool", "mcp", "wrong_tool", "oracle_call"}``
is exact match pooled over the **beyond-length** sets; ``details`` has every set, the call-parse
rate (a well-formed ``[calc:...]`` was written), argument correctness (the written call evaluates
to the right answer) and MCP latency per call and at start-up.

A call task the params do not prepare (the SmolLM2 profile has none of the three) is generated at
the embedded suite's level (:func:`forgelib.agents.tooldata.call_rows`), ``n_test`` test rows and
up to ``n_generated`` train rows, and named in ``details.generated_call_tasks``.

Training rows: the suite's train splits of add/mod_add/mod_mul plus ``n_generated`` 2-digit
products, and a ``replay_fraction`` of the other tasks' train rows (direct answers in both twins)
so the tool model keeps its other skills.

What the embedded default shows (``bench/mcp.py``): in length, the tool model answers nearly every
row through MCP, the wrong tool drops it to ~0 and the no-tool twin stays far below, so the model
does copy its tool's result. Beyond length every arm scores ~0, the oracle included: the 2-layer
model cannot copy digit strings longer than its training rows (it writes ``[calc:8*144]`` for
``824*184=``, and garbles a given 6-digit result), so the beyond-length gain is a missed target.
Longer runs outside the ~90 s budget (2400 steps) with extra copying rows learned either the
longer calls or the longer results, never both; they are not in this module.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

from forgelib.agents.calculator import CalculatorError, calculate
from forgelib.agents.config import ToolArmsConfig
from forgelib.agents.mcp_client import McpClient, ToolReply
from forgelib.agents.toolcall import (ToolCall, Trace, format_call, format_result, hf_generate, mcp_tool,
                                      run_with_tools)
from forgelib.agents.tooldata import (CALL_TASKS, call_rows, check_fits, encode_tool_row, operand_rows,
                                      plain_row, tool_row)
from forgelib.io import write_json

ARMS = ("no_tool", "mcp", "wrong_tool", "oracle_call")
BEYOND_DIGITS = (3, 4)


def build_sets(data_dir: str | Path, config: ToolArmsConfig) -> tuple[list[dict], dict, dict, list[str]]:
    """``(train_rows, in_length_sets, beyond_sets, generated_tasks)``; the sets map a name to rows."""
    from forgelib.data.tasks import load_tasks

    suite_train, suite_test, generated = call_rows(data_dir, n_train=config.n_generated, n_test=config.n_test,
                                                   seed=config.seed)
    in_length = {t: [r for r in suite_test if r["task"] == t] for t in ("add", "mod_add", "mod_mul")}
    in_length["mul"] = operand_rows("mul", 2, config.n_test, config.seed + 1)
    beyond = {f"{op}_{d}": operand_rows(op, d, config.n_test, config.seed + 1) for op in ("add", "mul")
              for d in BEYOND_DIGITS}
    held_out = {r["prompt"] for r in in_length["mul"]}
    train = suite_train + operand_rows("mul", 2, config.n_generated, config.seed, exclude=held_out)
    if config.replay_fraction > 0:
        others = [dict(r) for name, splits in load_tasks(data_dir).items()
                  if name not in ("add", "mod_add", "mod_mul") for r in splits["train"]]
        want = round(len(train) * config.replay_fraction / (1 - config.replay_fraction))
        train += random.Random(f"replay:{config.seed}").sample(others, min(want, len(others)))
    return train, in_length, beyond, generated


def fine_tune(model, tokenizer, rows: Sequence[dict], config: ToolArmsConfig, *, desc: str):
    """A trained copy of ``model`` on ``rows`` (tool rows keep their masked result span)."""
    from forgelib.base.sft import SFTSettings, train_sft

    twin = copy.deepcopy(model)
    encoded = [encode_tool_row(tokenizer, r) for r in rows]
    settings = SFTSettings(steps=config.steps, lr=config.lr, batch_size=config.batch_size, seed=config.seed)
    history = train_sft(twin, encoded, settings, pad_id=tokenizer.pad_token_id, desc=desc)
    return twin, history


def wrong_tool(seed: int) -> Callable[[ToolCall], ToolReply]:
    """The counterfactual calculator: a right call gets its value plus 1..9 (seeded per call)."""

    def call(tool_call: ToolCall) -> ToolReply:
        started = time.perf_counter()
        try:
            value = calculate(tool_call.argument)
        except CalculatorError as exc:
            return ToolReply(str(exc), True, time.perf_counter() - started)
        offset = random.Random(f"wrong:{seed}:{tool_call.argument}").randint(1, 9)
        return ToolReply(str(value + offset), False, time.perf_counter() - started)

    return call


def _no_call(tool_call: ToolCall) -> ToolReply:
    raise AssertionError(f"the oracle arm runs no tool, got {tool_call}")


def _argument_correct(trace: Trace, answer: str) -> bool:
    if not trace.calls:
        return False
    try:
        return str(calculate(trace.calls[0].call.argument)) == answer
    except CalculatorError:
        return False


def score_traces(traces: Sequence[Trace], rows: Sequence[dict]) -> dict:
    """Exact match, call-parse rate and argument correctness of one arm on one set."""
    n = len(rows)
    hits = [t.answer == r["answer"] for t, r in zip(traces, rows)]
    return {
        "exact_match": sum(hits) / n,
        "call_parse_rate": sum(bool(t.calls) for t in traces) / n,
        "argument_correct": sum(_argument_correct(t, r["answer"]) for t, r in zip(traces, rows)) / n,
        "n": n,
    }


def _pooled(per_set: dict, names: Sequence[str], key: str = "exact_match") -> float:
    total = sum(per_set[name]["n"] for name in names)
    return sum(per_set[name][key] * per_set[name]["n"] for name in names) / total


def _latency(seconds: Sequence[float]) -> dict:
    ordered = sorted(seconds)
    if not ordered:
        return {"calls": 0}
    return {"calls": len(ordered), "mean_ms": 1000 * statistics.fmean(ordered),
            "median_ms": 1000 * statistics.median(ordered),
            "p90_ms": 1000 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]}


def run_tool_arms(model_dir: str | Path, *, data_dir: str | Path, out_model_dir: str | Path,
                  config: ToolArmsConfig | None = None, server_command: Sequence[str] | None = None,
                  results_path: str | Path | None = None, **overrides) -> dict:
    """Train the tool model and its no-tool twin, measure the four arms, save the tool model.

    ``overrides`` replace fields of ``config`` (``seed=1, steps=400``). ``server_command``: how to
    start the MCP server (default ``python -m forgelib.agents.mcp_server``). Returns the headline
    (beyond-length exact match per arm) with ``details``; also written to ``results_path``.
    """
    from forgelib.eval.generate import greedy_answers
    from forgelib.models.hf import load_model, save_model

    config = dataclasses.replace(config or ToolArmsConfig(), **overrides)
    model, tokenizer = load_model(model_dir)
    train, in_length, beyond, generated = build_sets(data_dir, config)
    sets = {**{f"in/{k}": v for k, v in in_length.items()}, **{f"beyond/{k}": v for k, v in beyond.items()}}
    all_test = [tool_row(r) for rows in sets.values() for r in rows]
    tool_rows = [tool_row(r) if r["task"] in CALL_TASKS else plain_row(r) for r in train]
    check_fits(tool_rows + all_test, model.config.max_position_embeddings, tokenizer)

    tool_model, tool_history = fine_tune(model, tokenizer, tool_rows, config, desc="tool model")
    plain_model, plain_history = fine_tune(model, tokenizer, [plain_row(r) for r in train], config, desc="no-tool twin")

    budget = max(len(r["target"]) for r in all_test) + 2
    answer_budget = max(len(r["answer"]) for r in all_test) + 2
    generate = hf_generate(tool_model, tokenizer, max_new_tokens=budget, batch_size=config.eval_batch_size)
    per_arm: dict[str, dict] = {arm: {} for arm in (*ARMS, "input_model")}
    mcp_seconds: list[float] = []
    with McpClient(server_command) as client:
        tool = mcp_tool(client)

        def timed(tool_call: ToolCall) -> ToolReply:
            reply = tool(tool_call)
            mcp_seconds.append(reply.seconds)
            return reply

        for name, rows in sets.items():
            prompts = [r["prompt"] for r in rows]
            per_arm["mcp"][name] = score_traces(run_with_tools(prompts, generate, timed), rows)
            per_arm["wrong_tool"][name] = score_traces(run_with_tools(prompts, generate, wrong_tool(config.seed)), rows)
            oracle = [tool_row(r) for r in rows]
            prefixes = [format_call(r["call"]) + format_result(ToolReply(r["result"], False, 0.0)) for r in oracle]
            traces = run_with_tools(prompts, generate, _no_call, max_calls=0, prefixes=prefixes)
            per_arm["oracle_call"][name] = score_traces(traces, rows)
            for arm, direct in (("no_tool", plain_model), ("input_model", model)):
                answers = greedy_answers(direct, tokenizer, prompts, max_new_tokens=answer_budget,
                                         batch_size=config.eval_batch_size)
                per_arm[arm][name] = score_traces([Trace(p, text=a) for p, a in zip(prompts, answers)], rows)
        startup_s = client.startup_s

    beyond_names = [f"beyond/{k}" for k in beyond]
    in_names = [f"in/{k}" for k in in_length]
    headline = {arm: _pooled(per_arm[arm], beyond_names) for arm in ARMS}
    details = {
        "headline_is": "exact match pooled over the beyond-length sets (3- and 4-digit add and mul)",
        "beyond_length": {arm: _pooled(per_arm[arm], beyond_names) for arm in per_arm},
        "in_length": {arm: _pooled(per_arm[arm], in_names) for arm in per_arm},
        "call_parse_rate": {arm: _pooled(per_arm[arm], [*in_names, *beyond_names], "call_parse_rate")
                            for arm in ("mcp", "wrong_tool")},
        "argument_correct": {"mcp": _pooled(per_arm["mcp"], [*in_names, *beyond_names], "argument_correct")},
        "sets": per_arm,
        "latency": {"startup_s": startup_s, "per_call": _latency(mcp_seconds)},
        "generated_call_tasks": generated,
        "train": {"rows": len(train), "steps": config.steps, "tool_final_loss": tool_history[-1]["loss"],
                  "no_tool_final_loss": plain_history[-1]["loss"], "config": dataclasses.asdict(config)},
    }
    save_model(tool_model, tokenizer, out_model_dir, {
        "name": "forge-agents-tools",
        "description": "The input model fine-tuned to call the calculator over MCP: it writes `[calc:EXPR]`, "
                       "the runtime appends the result and `=`, and the model copies the answer.",
        "parents": [str(model_dir)],
        "params": {"tools": dataclasses.asdict(config)},
        "metrics": {"tools": headline},
    })
    result = {**headline, "details": details}
    if results_path is not None:
        write_json(results_path, result)
    return result
