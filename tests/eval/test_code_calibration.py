"""Calibration text from the stdlib that shares no file with code perplexity's evaluation
windows (``forgelib.eval.codeppl``), and ``compress.calibration`` that selects it.

(The code-perplexity tests themselves live in ``tests/eval/test_humaneval.py``.)
"""

import pytest
import torch

import forgelib.compress.run as compress_run
import forgelib.eval.codeppl as codeppl
from forgelib.compress.config import CompressConfig
from forgelib.config import parse_section
from forgelib.eval.codeppl import (
    EVAL_MAX_TOKENS,
    EVAL_SEQ_LEN,
    MAX_CHARS_PER_TOKEN,
    calibration_batches,
    disjoint_windows,
    stdlib_files,
    window_files,
)
from forgelib.errors import ForgeError
from forgelib.data.tokenizer import build_char_tokenizer
from forgelib.models.hf import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()  # the embedded default's char tokenizer (a fresh clone has no models/)


@pytest.fixture(scope="module")
def file_starts(tokenizer):
    """{stdlib file: its first tokens}, read as ``disjoint_windows`` reads a file."""
    root, files = stdlib_files()
    starts = {}
    for name in files:
        try:
            text = (root / name).read_text(encoding="utf-8")[: 64 * MAX_CHARS_PER_TOKEN]
        except (UnicodeDecodeError, OSError):
            continue
        starts[name] = tokenizer(text, add_special_tokens=False)["input_ids"][:64]
    return starts


def sources(window, file_starts):
    """The stdlib files whose start is this window. Usually one, but some files open alike (13
    stdlib files start ``import os\nimport sys\nimp``), so a window proves only that one of
    them, possibly an allowed one, was drawn."""
    return {name for name, ids in file_starts.items() if ids[: len(window)] == window}


# ---------------------------------------------------------------- disjoint_windows


@pytest.mark.parametrize("eval_tokens,min_files", [(500, 10), (20000, 500)])
def test_windows_are_file_starts_outside_the_evaluation_files(tokenizer, file_starts, eval_tokens, min_files):
    """With 20000 evaluation tokens over a third of the stdlib's files are excluded: a draw that
    ignored ``exclude`` would land on one of them."""
    excluded = set(window_files(tokenizer, max_tokens=eval_tokens, seq_len=32, seed=0))
    assert len(excluded) >= min_files
    windows = disjoint_windows(tokenizer, excluded, count=8, seq_len=32, seed=0)
    assert [len(w) for w in windows] == [32] * 8
    for window in windows:
        assert sources(window, file_starts) - excluded


def test_only_the_files_left_out_of_exclude_are_drawn_and_asking_for_more_raises(tokenizer, file_starts):
    long_enough = sorted(name for name, ids in file_starts.items() if len(ids) >= 32)
    allowed = set(long_enough[100:103])
    exclude = set(file_starts) - allowed
    windows = disjoint_windows(tokenizer, exclude, count=3, seq_len=32, seed=0)
    assert {tuple(w) for w in windows} == {tuple(file_starts[name][:32]) for name in allowed}
    with pytest.raises(ForgeError, match=r"only 3 windows of 32 tokens.*4 wanted"):
        disjoint_windows(tokenizer, exclude, count=4, seq_len=32, seed=0)


def test_the_seed_changes_the_files_and_a_repeat_changes_nothing(tokenizer):
    excluded = set(window_files(tokenizer, max_tokens=500, seq_len=32, seed=0))
    a = disjoint_windows(tokenizer, excluded, count=5, seq_len=32, seed=0)
    assert disjoint_windows(tokenizer, excluded, count=5, seq_len=32, seed=0) == a
    b = disjoint_windows(tokenizer, excluded, count=5, seq_len=32, seed=1)
    assert len({tuple(w) for w in a} & {tuple(w) for w in b}) < 5


# ---------------------------------------------------------------- calibration_batches


def test_calibration_batches_split_count_windows_into_full_batches_and_a_remainder(tokenizer):
    batches = calibration_batches(tokenizer, count=6, seq_len=24, batch_size=4, seed=0)
    assert [tuple(b["input_ids"].shape) for b in batches] == [(4, 24), (2, 24)]
    for b in batches:
        assert b["input_ids"].dtype == torch.int64
        assert b["attention_mask"].shape == b["input_ids"].shape
        assert bool((b["attention_mask"] == 1).all())


def test_calibration_by_default_avoids_the_default_code_perplexity_files(tokenizer, file_starts, monkeypatch):
    seen = {}
    real = codeppl.disjoint_windows

    def spy(tok, exclude, **kwargs):
        seen["exclude"] = set(exclude)
        return real(tok, exclude, **kwargs)

    monkeypatch.setattr(codeppl, "disjoint_windows", spy)
    batches = calibration_batches(tokenizer, count=6, seq_len=24, batch_size=4, seed=0)
    eval_files = set(window_files(tokenizer, max_tokens=EVAL_MAX_TOKENS, seq_len=EVAL_SEQ_LEN, seed=0))
    assert len(eval_files) >= 20 and seen["exclude"] == eval_files
    for row in torch.cat([b["input_ids"] for b in batches]).tolist():
        assert sources(row, file_starts) - eval_files
    explicit = calibration_batches(tokenizer, count=2, seq_len=24, batch_size=4, seed=0, exclude={"abc.py"})
    assert seen["exclude"] == {"abc.py"} and explicit[0]["input_ids"].shape == (2, 24)


# ---------------------------------------------------------------- compress.calibration


def test_compress_calibration_must_be_tasks_or_code():
    web = r"params\.yaml: compress\.calibration: expected one of tasks, code, got 'web'"
    with pytest.raises(ForgeError, match=web):
        parse_section({"compress": {"calibration": "web"}}, "compress", "params.yaml")
    with pytest.raises(ForgeError, match=r"compress\.calibration_seq_len: expected an integer >= 2, got 1"):
        parse_section({"compress": {"calibration_seq_len": 1}}, "compress", "params.yaml")
    cfg = parse_section({"compress": {"calibration": "code", "calibration_seq_len": 64}}, "compress", "params.yaml")
    assert (cfg.calibration, cfg.calibration_seq_len) == ("code", 64)
    assert parse_section({}, "compress", "params.yaml").calibration == "tasks"


@pytest.mark.parametrize("calibration", ["code", "tasks"])
def test_run_compress_hands_the_chosen_calibration_text_to_the_pipeline(calibration, tiny_data, tiny_trained,
                                                                       tmp_path, monkeypatch):
    captured = {}

    def fake_compress_model(input_dir, out_dir, cfg, **kwargs):
        captured.update(kwargs)
        return {}

    monkeypatch.setattr(compress_run, "compress_model", fake_compress_model)
    cfg = CompressConfig(calibration=calibration, calibration_batches=2, batch_size=3, calibration_seq_len=16, seed=5)
    compress_run.run_compress(cfg, data_dir=tiny_data, input_dir=tiny_trained[0], out_dir=tmp_path / "out")
    got = captured["calibration_batches"]
    assert len(got) == 2
    if calibration == "code":
        tokenizer = load_tokenizer(tiny_trained[0])
        expected = calibration_batches(tokenizer, count=6, seq_len=16, batch_size=3, seed=5)
        for a, b in zip(got, expected):
            assert a["input_ids"].equal(b["input_ids"]) and a["attention_mask"].equal(b["attention_mask"])
    else:  # task rows: padded answer-loss batches
        assert "labels" in got[0] and got[0]["input_ids"].shape[0] == 3
