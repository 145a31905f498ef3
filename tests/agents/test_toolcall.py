"""The model side of tool use: the call format, the tool-use data, and the runtime.

The runtime is driven by scripted "models" (functions from prefixes to continuations) so every
appended character can be checked by hand, then end to end by a tiny Llama trained here for a
few seconds on tool-use rows, whose answers must follow the tool it is given.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from forgelib.agents.calculator import calculate
from forgelib.agents.mcp_client import McpClient, ToolReply
from forgelib.agents.tool_arms import ARMS, score_traces, wrong_tool
from forgelib.agents.toolcall import (ERROR_TEXT, ToolCall, format_call, format_result, hf_generate, mcp_tool,
                                      parse_call, run_with_tools)
from forgelib.agents.tooldata import (encode_tool_row, explicit_call, operand_rows, plain_row,
                                      tool_row)
from forgelib.data.batching import IGNORE
from forgelib.data.tasks import generate, get_task
from forgelib.data.tokenizer import ALPHABET

REPO = Path(__file__).resolve().parents[2]


def local_calculator(call: ToolCall) -> ToolReply:
    try:
        return ToolReply(str(calculate(call.argument)), False, 0.0)
    except ValueError as exc:
        return ToolReply(str(exc), True, 0.0)


def refuse(call: ToolCall) -> ToolReply:
    raise AssertionError(f"no tool call expected, got {call}")


# -- the format -------------------------------------------------------------------------------

@pytest.mark.parametrize("argument", ["(62+37)%97", "96+39", "1234*5678", "-5+3", "abs(2)*(3-4)", "2**3 % 5"])
def test_call_format_round_trips(argument):
    text = format_call(argument)
    assert set(text) <= set(ALPHABET)
    assert parse_call(text) == ToolCall("calc", argument)
    assert parse_call("12+3=" + text) == ToolCall("calc", argument)
    assert parse_call(text).tool == "calculate"


@pytest.mark.parametrize("segment", ["[calc:]", "[foo:1+1]", "1+1]", "calc:1+1]", "[calc1+1]", "[calc:1+1",
                                     "[calc:[1]]", "]"])
def test_malformed_calls_do_not_parse(segment):
    assert parse_call(segment) is None


@pytest.mark.parametrize("argument", ["1/2", "a[0]", "", "x>1"])
def test_calls_the_model_cannot_write_are_refused(argument):
    with pytest.raises(ValueError):
        format_call(argument)


@pytest.mark.parametrize("reply, text", [
    (ToolReply("90", False, 0.0), "90="), (ToolReply(" -3\n", False, 0.0), "-3="),
    (ToolReply("Error executing tool calculate: x", True, 0.0), f"{ERROR_TEXT}="),
    (ToolReply("0.5", False, 0.0), f"{ERROR_TEXT}="), (ToolReply("1=2", False, 0.0), f"{ERROR_TEXT}="),
])
def test_results_are_written_in_the_alphabet(reply, text):
    assert format_result(reply) == text


# -- the data ---------------------------------------------------------------------------------

def _call_rows() -> list[dict]:
    rows = []
    for task in ("add", "mod_add", "mod_mul"):
        for level in range(1, get_task(task).max_level + 1):
            rows += generate(task, level, 300, seed=3)
    data = REPO / "data" / "tasks"
    if data.is_dir():  # the embedded default's prepared splits, when present
        from forgelib.data.tasks import load_tasks

        tasks = load_tasks(REPO / "data")
        rows += [dict(r) for t in ("add", "mod_add", "mod_mul") if t in tasks for split in tasks[t].values()
                 for r in split]
    for row in rows:  # the suite's own verifier agrees with every answer
        assert get_task(row["task"]).answer_of(row["prompt"]) == row["answer"]
    for op in ("add", "mul"):
        for digits in (2, 3, 4):
            rows += operand_rows(op, digits, 300, seed=3)
    return rows


def test_every_tool_call_evaluates_to_its_answer():
    rows = _call_rows()
    assert len(rows) >= 4500
    for row in rows:
        converted = tool_row(row)
        assert calculate(converted["call"]) == int(row["answer"]), row
        assert converted["result"] == row["answer"]
        assert converted["target"] == f"[calc:{converted['call']}]{row['answer']}={row['answer']}"


def test_the_task_prompt_itself_is_not_the_call():
    """Why calls are explicit: read as Python, `62+37%97` is 62 + (37 % 97), right only when the
    sum is below 97 (`*` and `%` share a precedence, so mod_mul prompts read right by luck)."""
    rows = generate("mod_add", 4, 300, seed=3)
    literal = sum(calculate(r["prompt"].rstrip("=")) == int(r["answer"]) for r in rows)
    assert 0.3 < literal / len(rows) < 0.7
    assert explicit_call("mod_add", "62+37%97=") == "(62+37)%97"


def test_operand_rows_have_the_requested_lengths_and_exclusions():
    two = operand_rows("mul", 2, 500, seed=0)
    assert all(0 <= int(x) < 100 for r in two for x in r["prompt"][:-1].split("*"))
    four = operand_rows("add", 4, 200, seed=0)
    assert all(len(x) == 4 for r in four for x in r["prompt"][:-1].split("+"))
    again = operand_rows("mul", 2, 500, seed=1, exclude={r["prompt"] for r in two})
    assert not {r["prompt"] for r in two} & {r["prompt"] for r in again}
    assert len({r["prompt"] for r in again}) == 500


def test_loss_is_masked_on_the_prompt_and_the_tool_result(tiny_data):
    from forgelib.models.hf import load_tokenizer

    tokenizer = load_tokenizer(tiny_data / "tokenizer")
    row = tool_row({"task": "add", "prompt": "12+34=", "answer": "46"})
    ids, labels = encode_tool_row(tokenizer, row)
    ids_of = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    call = ids_of("[calc:12+34]")
    assert ids == tokenizer("12+34=")["input_ids"] + call + ids_of("46=") + ids_of("46") + [tokenizer.eos_token_id]
    assert labels == [IGNORE] * 7 + call + [IGNORE] * 3 + ids_of("46") + [tokenizer.eos_token_id]
    plain_ids, plain_labels = encode_tool_row(tokenizer, plain_row({"prompt": "12+34=", "answer": "46"}))
    assert plain_labels == [IGNORE] * 7 + ids_of("46") + [tokenizer.eos_token_id]


# -- the runtime, with scripted models --------------------------------------------------------

def copying_model(junk_after_call: str = "999=999"):
    """Writes the explicit call for a prompt (plus junk the runtime must cut), then copies the
    tool's result as its answer."""

    def generate(prefixes):
        out = []
        for prefix in prefixes:
            if prefix.endswith("=") and "]" in prefix:
                out.append(prefix[prefix.rindex("]") + 1 : -1])
            else:
                out.append(format_call(prefix[:-1]) + junk_after_call)
        return out

    return generate


PROMPTS = ["12+34=", "7*8=", "1234*5678=", "99+1="]


def test_runtime_appends_the_tool_result_and_lets_the_model_answer():
    traces = run_with_tools(PROMPTS, copying_model(), local_calculator)
    assert [t.text for t in traces] == ["[calc:12+34]46=46", "[calc:7*8]56=56", "[calc:1234*5678]7006652=7006652",
                                        "[calc:99+1]100=100"]
    assert [t.answer for t in traces] == ["46", "56", "7006652", "100"]
    assert [t.calls[0].call.argument for t in traces] == ["12+34", "7*8", "1234*5678", "99+1"]


def test_the_wrong_tool_changes_every_answer_of_a_copying_model():
    right = run_with_tools(PROMPTS, copying_model(), local_calculator)
    wrong = run_with_tools(PROMPTS, copying_model(), wrong_tool(seed=0))
    for r, w in zip(right, wrong):
        assert 1 <= int(w.answer) - int(r.answer) <= 9
    rows = [{"prompt": p, "answer": t.answer} for p, t in zip(PROMPTS, right)]
    assert score_traces(right, rows)["exact_match"] == 1.0
    assert score_traces(wrong, rows) == {"exact_match": 0.0, "call_parse_rate": 1.0, "argument_correct": 1.0, "n": 4}


def test_runtime_handles_direct_answers_malformed_calls_errors_and_the_call_limit():
    direct = run_with_tools(["12+34="], lambda ps: ["46"] * len(ps), refuse)
    assert (direct[0].answer, direct[0].calls, direct[0].malformed_call) == ("46", [], False)
    malformed = run_with_tools(["12+34="], lambda ps: ["[calk:12+34]46"] * len(ps), refuse)
    assert malformed[0].malformed_call and malformed[0].calls == [] and malformed[0].answer == "[calk:12+34]46"
    refused = run_with_tools(["1+1="], lambda ps: ["[calc:2**99999]" if p == "1+1=" else "7" for p in ps],
                             local_calculator)
    assert refused[0].text == f"[calc:2**99999]{ERROR_TEXT}=7" and refused[0].calls[0].reply.is_error
    always_calls = lambda ps: ["[calc:1+1]"] * len(ps)
    limited = run_with_tools(["1+1="], always_calls, local_calculator, max_calls=2)
    assert len(limited[0].calls) == 2 and limited[0].text == "[calc:1+1]2=[calc:1+1]2=[calc:1+1]"
    oracle = run_with_tools(["12+34="], copying_model(), refuse, max_calls=0, prefixes=["[calc:12+34]46="])
    assert oracle[0].text == "[calc:12+34]46=46" and oracle[0].answer == "46"


def test_score_traces_counts_parse_and_argument_correctness():
    rows = [{"prompt": "2+2=", "answer": "4"}] * 4
    traces = run_with_tools(["2+2="] * 4, lambda ps: ["[calc:2+2]", "[calc:2+3]", "4", "[cal:2+2]"], local_calculator)
    # the scripted model answers "[calc:...]" again after the result: no answer for the first two
    assert score_traces(traces, rows) == {"exact_match": 0.25, "call_parse_rate": 0.5, "argument_correct": 0.25, "n": 4}


def test_runtime_calls_through_a_real_mcp_session():
    with McpClient() as client:
        traces = run_with_tools(PROMPTS, copying_model(), mcp_tool(client))
    assert [t.answer for t in traces] == ["46", "56", "7006652", "100"]
    assert all(0 < t.calls[0].reply.seconds < 1.0 for t in traces)


# -- end to end: a tiny Llama learns to call and to copy --------------------------------------

@pytest.fixture(scope="module")
def tiny_tool_model(tiny_data):
    """A 1-layer Llama trained ~8 s on single-digit sums in the tool format (ten digits, so every
    call and result is seen in training; the test is whether answers follow the tool)."""
    from forgelib.base.sft import SFTSettings, train_sft
    from forgelib.models.build import build_llama, llama_config
    from forgelib.models.hf import load_tokenizer

    torch.set_num_threads(1)
    tokenizer = load_tokenizer(tiny_data / "tokenizer")
    config = llama_config(vocab_size=len(tokenizer), hidden_size=48, num_layers=1, num_heads=2, intermediate_size=96,
                          max_position_embeddings=32)
    model = build_llama(config, seed=0)
    rows = [tool_row({"task": "add", "prompt": f"{x}+{y}=", "answer": str(x + y)}) for x in range(10) for y in range(10)]
    encoded = [encode_tool_row(tokenizer, r) for r in rows]
    history = train_sft(model, encoded, SFTSettings(steps=150, lr=1e-2, batch_size=50, log_every=25),
                        pad_id=tokenizer.pad_token_id)
    return model, tokenizer, rows, history


def test_tiny_model_calls_the_tool_and_copies_its_result(tiny_tool_model):
    model, tokenizer, rows, history = tiny_tool_model
    assert history[-1]["loss"] < 0.2 * history[0]["loss"]
    generate = hf_generate(model, tokenizer, max_new_tokens=20)
    prompts = [r["prompt"] for r in rows]
    right = score_traces(run_with_tools(prompts, generate, local_calculator), rows)
    assert right["call_parse_rate"] >= 0.95 and right["argument_correct"] >= 0.9 and right["exact_match"] >= 0.9
    wrong = score_traces(run_with_tools(prompts, generate, wrong_tool(seed=0)), rows)
    assert wrong["call_parse_rate"] >= 0.95 and wrong["exact_match"] <= 0.1
    # generation stops at "]": the text the model wrote before the result is exactly one call
    traces = run_with_tools(prompts[:5], generate, local_calculator)
    assert all(t.text.startswith(format_call(t.calls[0].call.argument)) for t in traces)


def test_run_tool_arms_end_to_end_on_a_small_suite(tmp_path):
    """The whole arms run, tiny: every arm and set is scored, the tool model is saved and loads."""
    from forgelib.agents.tool_arms import run_tool_arms
    from forgelib.data.config import PrepareConfig
    from forgelib.data.prepare import prepare
    from forgelib.io import read_json
    from forgelib.models.build import build_llama, llama_config
    from forgelib.models.hf import load_model, load_tokenizer, save_model

    torch.set_num_threads(1)
    data = tmp_path / "data"
    prepare(PrepareConfig(tasks=("add", "mod_add", "mod_mul", "copy"), default_level=1, n_train=150, n_val=10,
                          n_test=10), data)
    tokenizer = load_tokenizer(data / "tokenizer")
    config = llama_config(vocab_size=len(tokenizer), hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                          max_position_embeddings=64)
    save_model(build_llama(config, seed=0), tokenizer, tmp_path / "input", {"name": "input"})
    result = run_tool_arms(tmp_path / "input", data_dir=data, out_model_dir=tmp_path / "agents",
                           results_path=tmp_path / "tools.json", steps=20, n_generated=40, n_test=8, lr=3e-3)
    assert set(ARMS) <= set(result) and all(0.0 <= result[arm] <= 1.0 for arm in ARMS)
    details = result["details"]
    assert set(details["sets"]["mcp"]) == {"in/add", "in/mod_add", "in/mod_mul", "in/mul", "beyond/add_3",
                                           "beyond/add_4", "beyond/mul_3", "beyond/mul_4"}
    assert details["sets"]["mcp"]["in/mul"]["n"] == 8 and details["sets"]["mcp"]["in/add"]["n"] == 10
    for arm in ("mcp", "wrong_tool"):
        for scores in details["sets"][arm].values():
            assert scores["argument_correct"] <= scores["call_parse_rate"]
    assert all(math.isfinite(details["train"][k]) for k in ("tool_final_loss", "no_tool_final_loss"))
    assert details["latency"]["startup_s"] > 0
    assert read_json(tmp_path / "tools.json") == result
    model, _ = load_model(tmp_path / "agents")
    assert model.config.num_hidden_layers == 1


def test_call_tasks_missing_from_the_suite_are_generated_disjoint(tmp_path):
    """A profile that prepares none of add/mod_add/mod_mul (SmolLM2's) still gets tool data: the
    tasks are generated at the embedded suite's levels, test and train share no prompt."""
    from forgelib.agents.config import ToolArmsConfig
    from forgelib.agents.tool_arms import build_sets
    from forgelib.agents.tooldata import SUITE_LEVELS, tool_row
    from forgelib.data.config import PrepareConfig
    from forgelib.data.prepare import prepare

    data = tmp_path / "data"
    prepare(PrepareConfig(tasks=("copy", "reverse"), default_level=1, n_train=50, n_val=5, n_test=5), data)
    config = ToolArmsConfig(n_generated=120, n_test=16, replay_fraction=0.25)
    train, in_length, beyond, generated = build_sets(data, config)
    assert generated == ["add", "mod_add", "mod_mul"]
    for task in generated:
        test_rows = in_length[task]
        assert len(test_rows) == 16 and {r["level"] for r in test_rows} == {SUITE_LEVELS[task]}
        train_prompts = {r["prompt"] for r in train if r["task"] == task}
        assert len(train_prompts) == 120 and not train_prompts & {r["prompt"] for r in test_rows}
    assert all(r["prompt"].endswith("%97=") for r in in_length["mod_mul"])
    assert all(int(tool_row(r)["result"]) == int(r["answer"]) for r in in_length["mod_add"] + in_length["mod_mul"])
    # replay: the other tasks are a quarter of the rows
    replay = sum(r["task"] in ("copy", "reverse") for r in train)
    assert replay == 100  # all 100 prepared train rows (fewer than the 0.25 share asks for)
    assert len(beyond["mul_4"]) == 16


def test_prepared_call_tasks_are_used_as_prepared(tmp_path):
    from forgelib.agents.config import ToolArmsConfig
    from forgelib.agents.tool_arms import build_sets
    from forgelib.data.config import PrepareConfig
    from forgelib.data.prepare import prepare
    from forgelib.data.tasks import load_tasks

    data = tmp_path / "data"
    prepare(PrepareConfig(tasks=("add", "mod_add", "mod_mul"), default_level=1, n_train=40, n_val=5, n_test=7), data)
    train, in_length, _, generated = build_sets(data, ToolArmsConfig(n_generated=10, n_test=3, replay_fraction=0))
    assert generated == []
    tasks = load_tasks(data)
    for task in ("add", "mod_add", "mod_mul"):
        assert [r["prompt"] for r in in_length[task]] == list(tasks[task]["test"]["prompt"])
