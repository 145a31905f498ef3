"""The `prepare` stage's entry point: task datasets and the tokenizer, written atomically.

Splits are built from one stream of distinct prompts per task (seeded), so train, validation
and test never share a prompt. Held-out splits are taken first, then train fills up from the
rest: a level with a small space (modular arithmetic: 97 x 97 pairs) keeps its held-out sets
and trains on at most ``max_train_fraction`` of the space.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, DatasetDict
from tqdm.auto import tqdm

from forgelib.data.config import PrepareConfig
from forgelib.data.tasks import generate, get_task
from forgelib.data.tasks.registry import split_sizes
from forgelib.data.tokenizer import build_char_tokenizer
from forgelib.io import atomic_dir, write_json


def build_splits(task: str, cfg: PrepareConfig) -> DatasetDict:
    level = cfg.level(task)
    n_train, n_val, n_test = split_sizes(get_task(task).space(level), cfg.n_train, cfg.n_val, cfg.n_test, cfg.max_train_fraction)
    rows = generate(task, level, n_train + n_val + n_test, cfg.seed)
    held_out = n_val + n_test
    return DatasetDict(
        {
            "train": Dataset.from_list(rows[held_out:]),
            "validation": Dataset.from_list(rows[:n_val]),
            "test": Dataset.from_list(rows[n_val:held_out]),
        }
    )


def prepare(cfg: PrepareConfig, out_dir: str | Path, metrics_path: str | Path | None = None) -> dict:
    """Write ``out_dir/tasks/<task>`` (save_to_disk) and ``out_dir/tokenizer``; return stats."""
    stats: dict = {"tasks": {}}
    with atomic_dir(out_dir) as tmp:
        for task in tqdm(cfg.tasks, desc="prepare", leave=False):
            splits = build_splits(task, cfg)
            splits.save_to_disk(str(tmp / "tasks" / task))
            stats["tasks"][task] = {
                "family": get_task(task).family,
                "level": cfg.level(task),
                **{name: len(ds) for name, ds in splits.items()},
            }
        tokenizer = build_char_tokenizer(number_tokens=cfg.number_tokens)
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        stats["vocab_size"] = len(tokenizer)
    if metrics_path:
        write_json(metrics_path, stats)
    return stats
