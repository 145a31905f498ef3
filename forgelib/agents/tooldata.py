"""Tool-use data from the task suite: when to call the calculator, what to write, how to copy it.

The task prompts are not Python: ``62+37%97=`` means ``(62+37) mod 97``, and ``%`` binds tighter
than ``+`` in Python, so copying the prompt would compute ``62 + (37 % 97) = 99``. Each row's call
is therefore written explicitly (:func:`explicit_call`) and the training text becomes::

    prompt      62+37%97=
    target      [calc:(62+37)%97]2=2       (call, tool result + "=", answer; then <eos>)

The loss covers the call, the answer and ``<eos>``, not the prompt and not the result span
``2=`` that the runtime writes (:func:`encode_tool_row`): the model is taught to call and to copy,
never to predict the tool's output. Rows of other tasks pass through unchanged (replay).

Tasks with a call: ``add`` (``96+39=``), ``mod_add`` / ``mod_mul`` (``x op y % p =``) from the
prepared data (generated at the embedded suite's levels where a profile does not prepare them),
and ``mul`` (``12*34=``), generated here with a seeded RNG since the suite has no plain product.
:func:`operand_rows` makes add/mul sets at a given operand length: the trained length (up to 2
digits, like the suite's ``add`` at level 1) and beyond it (exactly 3 and 4 digits).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from forgelib.agents.calculator import calculate, format_result as format_value
from forgelib.agents.toolcall import RESULT_END, format_call
from forgelib.data.batching import IGNORE
from forgelib.errors import ForgeError

CALL_TASKS = ("add", "mul", "mod_add", "mod_mul")
OPS = {"add": "+", "mul": "*"}


def explicit_call(task: str, prompt: str) -> str:
    """The Python expression whose value is the answer to ``prompt`` of ``task``."""
    body = prompt.removesuffix("=")
    if task in ("add", "mul"):
        return body
    if task in ("mod_add", "mod_mul"):
        expr, modulus = body.split("%")
        return f"({expr})%{modulus}"
    raise ForgeError(f"task {task!r} has no calculator call; tasks with one: {', '.join(CALL_TASKS)}")


def tool_row(row: dict) -> dict:
    """``row`` with ``call``, ``result`` and the tool-use ``target`` added (``answer`` is kept)."""
    call = explicit_call(row["task"], row["prompt"])
    result = format_value(calculate(call))
    return {**row, "call": call, "result": result, "target": f"{format_call(call)}{result}{RESULT_END}{row['answer']}"}


def plain_row(row: dict) -> dict:
    """``row`` as a direct-answer training row (the no-tool twin of :func:`tool_row`)."""
    return {**row, "target": row["answer"]}


def encode_tool_row(tokenizer, row: dict) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of ``<bos> prompt target <eos>`` with the loss masked on the prompt
    and, for tool rows, on the result span the runtime writes."""
    prompt_ids = tokenizer(row["prompt"])["input_ids"]  # starts with <bos>
    pieces: list[tuple[str, bool]] = []  # (text, trained)
    if "call" in row:
        pieces = [(format_call(row["call"]), True), (row["result"] + RESULT_END, False), (row["answer"], True)]
    else:
        pieces = [(row["target"], True)]
    ids, labels = list(prompt_ids), [IGNORE] * len(prompt_ids)
    for text, trained in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if trained else [IGNORE] * len(piece)
    ids.append(tokenizer.eos_token_id)
    labels.append(tokenizer.eos_token_id)
    return ids, labels


def operand_rows(op: str, digits: int, n: int, seed: int, *, exclude: set[str] = frozenset()) -> list[dict]:
    """``n`` distinct ``x OP y =`` rows. ``digits <= 2``: operands in 0..99 (the suite's ``add`` at
    level 1); otherwise both operands have exactly ``digits`` digits."""
    if op not in OPS:
        raise ForgeError(f"operand_rows: op {op!r} unknown; valid: {', '.join(OPS)}")
    lo, hi = (0, 100) if digits <= 2 else (10 ** (digits - 1), 10**digits)
    rng = random.Random(f"tooldata:{op}:{digits}:{seed}")
    rows, seen, attempts = [], set(exclude), 0
    while len(rows) < n and attempts < 50 * n:
        attempts += 1
        x, y = rng.randrange(lo, hi), rng.randrange(lo, hi)
        prompt = f"{x}{OPS[op]}{y}="
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append({"task": op, "family": "arithmetic", "level": digits, "prompt": prompt,
                     "answer": str(x + y if op == "add" else x * y)})
    return rows


SUITE_LEVELS = {"add": 1, "mod_add": 4, "mod_mul": 4}
"""The embedded suite's levels of the call tasks (params.yaml ``prepare.levels``): 2-digit sums and
sums/products mod 97. Used for a call task that the prepared data does not have."""


def call_rows(data_dir: str | Path, *, n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict], list[str]]:
    """``(train, test, generated)``: the rows of the suite's tasks that have a call (add, mod_add, mod_mul).

    A task in ``data_dir`` gives its prepared train and test splits. A task the params do not
    prepare (the SmolLM2 profile prepares reasoning-gym and string tasks) is generated here at
    :data:`SUITE_LEVELS` with the prepare stage's generator, test rows first and then at most
    ``n_train`` train rows, so the two never share a prompt; its name is listed in ``generated``.
    """
    from forgelib.data.tasks import generate, get_task, load_tasks
    from forgelib.data.tasks.registry import split_sizes

    tasks = load_tasks(data_dir)
    train: list[dict] = []
    test: list[dict] = []
    generated: list[str] = []
    for task in ("add", "mod_add", "mod_mul"):
        if task in tasks:
            train += [dict(r) for r in tasks[task]["train"]]
            test += [dict(r) for r in tasks[task]["test"]]
            continue
        level = SUITE_LEVELS[task]
        n_tr, _, n_te = split_sizes(get_task(task).space(level), n_train, 0, n_test, 0.5)
        rows = generate(task, level, n_te + n_tr, seed)
        test += rows[:n_te]
        train += rows[n_te:]
        generated.append(task)
    return train, test, generated


def check_fits(rows: Sequence[dict], max_positions: int, tokenizer) -> None:
    """Every encoded tool row fits the model's positions, or a ForgeError naming the longest."""
    length, longest = max(((len(encode_tool_row(tokenizer, row)[0]), row) for row in rows), key=lambda pair: pair[0])
    if length > max_positions:
        raise ForgeError(f"tool data: {longest['prompt']!r} encodes to {length} tokens, more than the model's "
                         f"max_position_embeddings={max_positions}; use shorter operands")
