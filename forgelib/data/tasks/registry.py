"""The explicit registry of task generators, and split building/loading."""

from __future__ import annotations

import random
from pathlib import Path

from forgelib.data.tasks.algorithmic import all_generators
from forgelib.data.tasks.base import TaskGenerator
from forgelib.data.tasks.composite import composite_generators
from forgelib.data.tasks.reasoning_gym_tasks import reasoning_gym_generators
from forgelib.data.tasks.serial import serial_generators
from forgelib.errors import ForgeError

TASKS: dict[str, TaskGenerator] = {task.name: task for task in [*all_generators(), *reasoning_gym_generators(), *serial_generators()]}
TASKS.update({task.name: task for task in composite_generators()})  # outside the suite: specialize's mixing


def get_task(name: str) -> TaskGenerator:
    try:
        return TASKS[name]
    except KeyError:
        raise ForgeError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None


def families(task_names: list[str] | None = None) -> dict[str, list[str]]:
    """Family name -> the tasks in it, in registry order."""
    out: dict[str, list[str]] = {}
    for name in task_names or list(TASKS):
        out.setdefault(get_task(name).family, []).append(name)
    return out


def generate(task: str, level: int, n: int, seed: int, exclude: set[str] | None = None) -> list[dict]:
    """``n`` distinct examples of ``task`` at ``level`` (fewer if the level's space is smaller).

    Prompts in ``exclude`` are skipped, so generated training data never leaks held-out prompts.
    """
    gen = get_task(task)
    if not 1 <= level <= gen.max_level:
        raise ForgeError(f"task {task!r}: level {level} outside 1..{gen.max_level}")
    rng = random.Random(f"{task}:{level}:{seed}")
    exclude = exclude or set()
    space = gen.space(level)
    target = n if space is None else min(n, space)
    seen: set[str] = set()
    rows: list[dict] = []
    attempts = 0
    while len(rows) < target and attempts < 50 * max(n, 1):
        attempts += 1
        prompt, answer = gen.sample(level, rng)
        if prompt in seen or prompt in exclude:
            continue
        seen.add(prompt)
        rows.append({"task": task, "family": gen.family, "level": level, "prompt": prompt, "answer": answer})
    return rows


def split_sizes(space: int | None, n_train: int, n_val: int, n_test: int, max_train_fraction: float) -> tuple[int, int, int]:
    """Cap split sizes by the level's space: at most ``max_train_fraction`` of it is train."""
    if space is None or space >= n_train + n_val + n_test:
        return n_train, n_val, n_test
    train = min(n_train, int(space * max_train_fraction))
    rest = space - train
    val = min(n_val, rest // 2)
    return train, val, min(n_test, rest - val)


def load_tasks(data_dir: str | Path) -> dict:
    """Task name -> ``DatasetDict`` (train/validation/test) from ``data_dir/tasks``."""
    from datasets import load_from_disk

    root = Path(data_dir) / "tasks"
    if not root.is_dir():
        raise ForgeError(f"{root}: no task datasets here; run `dvc repro prepare` first")
    return {p.name: load_from_disk(str(p)) for p in sorted(root.iterdir()) if p.is_dir()}
