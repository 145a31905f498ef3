"""Task generators: deterministic, verifiable, leveled, and splits that never overlap."""

import pytest

from forgelib.data.config import PrepareConfig
from forgelib.data.prepare import build_splits
from forgelib.data.tasks import TASKS, generate, get_task
from forgelib.errors import ForgeError


@pytest.mark.parametrize("name", list(TASKS))
def test_generation_is_deterministic_and_verified(name):
    level = min(2, TASKS[name].max_level)
    first = generate(name, level, 50, seed=3)
    assert first == generate(name, level, 50, seed=3)
    assert first != generate(name, level, 50, seed=4)
    assert len({r["prompt"] for r in first}) == len(first)
    for row in first:
        assert get_task(name).check(row["prompt"], row["answer"]), row


@pytest.mark.parametrize("name", [n for n, t in TASKS.items() if t.max_level > 1])
def test_higher_levels_are_longer(name):
    gen = get_task(name)
    lo = sum(len(r["prompt"]) + len(r["answer"]) for r in generate(name, 1, 200, 0))
    hi = sum(len(r["prompt"]) + len(r["answer"]) for r in generate(name, gen.max_level, 200, 0))
    assert hi > lo


def test_known_answers():
    assert get_task("add").answer_of("58+67=") == "125"
    assert get_task("mod_mul").answer_of("50*60%97=") == str(3000 % 97)
    assert get_task("reverse").answer_of("rev:abc=") == "cba"
    assert get_task("sort_digits").answer_of("srt:3141=") == "1134"
    assert get_task("parity").answer_of("par:1101=") == "1001"
    assert get_task("brackets").answer_of("bal:([])[]=") == "yes"
    assert get_task("brackets").answer_of("bal:([)]=") == "no"


@pytest.mark.parametrize("name", ["mod_add", "parity", "add"])
def test_splits_are_disjoint(name):
    cfg = PrepareConfig(tasks=(name,), levels={name: 2}, n_train=400, n_val=60, n_test=60)
    splits = build_splits(name, cfg)
    prompts = {s: set(splits[s]["prompt"]) for s in splits}
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["validation"] & prompts["test"]
    assert len(prompts["test"]) > 0


def test_small_space_caps_train_fraction():
    cfg = PrepareConfig(tasks=("mod_add",), levels={"mod_add": 1}, n_train=1000, n_val=100, n_test=100, max_train_fraction=0.5)
    splits = build_splits("mod_add", cfg)
    assert len(splits["train"]) == 49 // 2  # 7*7 pairs, half of them train


def test_unknown_task_lists_valid():
    with pytest.raises(ForgeError, match="valid tasks: mod_add"):
        get_task("sorting")
