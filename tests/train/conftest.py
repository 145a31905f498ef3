"""Fixtures: a tiny task suite built from the real generators, the character tokenizer, and a
tiny seeded Llama, so the Forge loop runs end to end in about a second."""

from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset, DatasetDict

from forgelib.data.tasks import generate
from forgelib.data.tokenizer import build_char_tokenizer
from forgelib.models.build import build_llama, llama_config


def tiny_task(name: str, levels=(1, 2), per_level: int = 40) -> DatasetDict:
    rows = [row for level in levels for row in generate(name, level, per_level, seed=0)]
    random.Random(0).shuffle(rows)
    a, b = int(0.6 * len(rows)), int(0.8 * len(rows))
    return DatasetDict(train=Dataset.from_list(rows[:a]), validation=Dataset.from_list(rows[a:b]),
                       test=Dataset.from_list(rows[b:]))


@pytest.fixture(scope="session")
def tasks() -> dict:
    return {name: tiny_task(name) for name in ("mod_add", "reverse", "parity")}


@pytest.fixture(scope="session")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(tokenizer, seed: int = 0, hidden: int = 32, layers: int = 2):
    return build_llama(llama_config(vocab_size=len(tokenizer), hidden_size=hidden, num_layers=layers, num_heads=2),
                       seed=seed)
