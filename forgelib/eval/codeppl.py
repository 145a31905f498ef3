"""Perplexity on a real code corpus: the Python standard library's own source files
(``forge eval MODEL --benchmark codeppl``).

Every machine that runs Forge has the stdlib's ``.py`` files (``sysconfig.get_paths()["stdlib"]``):
tens of thousands of lines of varied, reviewed, PSF-licensed Python. They are held out from
everything Forge trains on. They are *not* guaranteed to be unseen by a pretrained model (CPython
is in The Stack), so the figure is for comparing Forge's phases on one model, not for comparing
with published perplexities.

Sampling (deterministic given ``seed``, the Python version and the tokenizer): the ``.py`` files
outside ``site-packages`` are sorted, shuffled with ``random.Random(seed)``, and each file in turn
contributes one window of at most ``seq_len`` tokens starting at a seeded random line, until
``max_tokens`` predicted tokens are collected. One window per file keeps the corpus diverse and
gives every window real context from a single file. A window of L tokens predicts L - 1 of them;
perplexity is ``exp(total NLL / predicted tokens)`` (:func:`forgelib.eval.scoring.perplexity`).
"""

from __future__ import annotations

import functools
import random
import sysconfig
from pathlib import Path

import torch
import torch.nn.functional as F

from forgelib.errors import ForgeError
from forgelib.eval.scoring import perplexity

# `forge eval --benchmark codeppl`'s defaults (forgelib/cli.py keeps its own literals, to start
# without importing torch): calibration text avoids the files of these windows.
EVAL_MAX_TOKENS = 20000
EVAL_SEQ_LEN = 512
MIN_FILE_TOKENS = 16  # shorter files (empty __init__.py, stubs) carry almost no signal
MAX_CHARS_PER_TOKEN = 16  # a slice this many chars per token always holds a full window


def stdlib_files() -> tuple[Path, list[str]]:
    """The stdlib root and its ``.py`` files (relative, sorted), third-party packages excluded."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = list(_stdlib_listing(root))
    if not files:
        raise ForgeError(f"code perplexity: no .py files under the stdlib at {root}")
    return root, files


@functools.cache
def _stdlib_listing(root: Path) -> tuple[str, ...]:
    return tuple(sorted(
        str(p.relative_to(root)) for p in root.rglob("*.py")
        if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts)
    ))


def _windows(tokenizer, *, max_tokens: int, seq_len: int, seed: int) -> tuple[list[list[int]], list[str]]:
    root, files = stdlib_files()
    rng = random.Random(seed)
    rng.shuffle(files)
    windows, used, budget = [], [], max_tokens
    for name in files:
        if budget <= 0:
            break
        try:
            text = (root / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        span = seq_len * MAX_CHARS_PER_TOKEN
        if len(text) > span:  # tokenize only a slice, starting at a seeded random line
            start = text.rfind("\n", 0, rng.randrange(len(text) - span + 1)) + 1
            text = text[start : start + span]
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) < MIN_FILE_TOKENS:
            continue
        length = min(len(ids), seq_len, budget + 1)
        windows.append(ids[:length])
        used.append(name)
        budget -= length - 1
    return windows, used


def window_files(tokenizer, *, max_tokens: int, seq_len: int, seed: int) -> list[str]:
    """The stdlib files :func:`code_perplexity` draws its windows from, for these settings."""
    return _windows(tokenizer, max_tokens=max_tokens, seq_len=seq_len, seed=seed)[1]


def disjoint_windows(tokenizer, exclude: set[str], *, count: int, seq_len: int, seed: int) -> list[list[int]]:
    """``count`` windows of exactly ``seq_len`` tokens, each the start of one stdlib file not in
    ``exclude`` (files shuffled with ``random.Random(seed + 1)``; shorter files skipped): text to
    train or calibrate on that shares no file with an evaluation that drew from ``exclude``."""
    root, files = stdlib_files()
    files = [f for f in files if f not in exclude]
    random.Random(seed + 1).shuffle(files)
    windows = []
    for name in files:
        if len(windows) == count:
            break
        try:
            text = (root / name).read_text(encoding="utf-8")[: seq_len * MAX_CHARS_PER_TOKEN]
        except (UnicodeDecodeError, OSError):
            continue
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= seq_len:
            windows.append(ids[:seq_len])
    if len(windows) < count:
        raise ForgeError(f"code windows: only {len(windows)} windows of {seq_len} tokens in the stdlib outside the "
                         f"{len(exclude)} evaluation files, {count} wanted; ask for fewer or shorter windows")
    return windows


def calibration_batches(tokenizer, *, count: int, seq_len: int, batch_size: int, seed: int = 0,
                        exclude: set[str] | None = None) -> list[dict[str, torch.Tensor]]:
    """``count`` code windows (:func:`disjoint_windows`) as batches of ``input_ids`` /
    ``attention_mask``, for calibration Hessians. ``exclude`` defaults to the files of
    ``forge eval --benchmark codeppl``'s default windows, so calibrating never sees them."""
    if exclude is None:
        exclude = set(window_files(tokenizer, max_tokens=EVAL_MAX_TOKENS, seq_len=EVAL_SEQ_LEN, seed=0))
    ids = torch.tensor(disjoint_windows(tokenizer, exclude, count=count, seq_len=seq_len, seed=seed))
    return [{"input_ids": ids[i : i + batch_size], "attention_mask": torch.ones_like(ids[i : i + batch_size])}
            for i in range(0, len(ids), batch_size)]


@torch.no_grad()
def code_perplexity(model, tokenizer, *, max_tokens: int, seq_len: int, seed: int) -> dict:
    """``{"perplexity", "n_tokens", "files"}`` of ``model`` on seeded stdlib windows (module doc)."""
    if max_tokens < 1:
        raise ForgeError(f"code perplexity: max_tokens must be >= 1, got {max_tokens}")
    if seq_len < 2:
        raise ForgeError(f"code perplexity: seq_len must be >= 2, got {seq_len}")
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and seq_len > context:
        raise ForgeError(f"code perplexity: seq_len {seq_len} exceeds the model's context of {context} tokens")
    windows, files = _windows(tokenizer, max_tokens=max_tokens, seq_len=seq_len, seed=seed)
    was_training = model.training
    model.eval()
    nll, counts = [], []
    for window in windows:
        ids = torch.tensor([window], device=model.device)
        logits = model(ids).logits[0, :-1].float()  # (L-1, V): position t predicts token t+1
        nll.append(F.cross_entropy(logits, ids[0, 1:], reduction="sum").item())
        counts.append(ids.shape[1] - 1)
    model.train(was_training)
    if sum(counts) == 0:
        raise ForgeError("code perplexity: no stdlib file could be tokenized into a window")
    return {"perplexity": perplexity(nll, counts), "n_tokens": sum(counts), "files": files}
