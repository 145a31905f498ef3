"""Choose codec settings per tensor group so the container meets a size target.

A greedy walk down each group's ladder (``StageConfig.ladder``, largest rung first). Every group
starts on its first rung; while the container is over the target, the move (one group to any of
its later, smaller rungs) with the least added ``score`` per byte saved is taken. Once under the
target, the slack is spent: any single-group change that still fits and lowers the score is
taken, best first, until none is left (the descent alone can overshoot into damage).

The score is the caller's (the pipeline passes log-perplexity of the decoded model on validation
data when it has an evaluation), else a proxy: the parameter-weighted relative error
``sum_t (n_t / N) * ||W_t - W_t_hat||^2 / ||W_t||^2``, which cannot tell a sensitive group
(attention) from a robust one. Sizes are real: each candidate is encoded, and the container
(header included) is serialized in memory to count its bytes. A rung is encoded at most once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from forgelib.compress.config import CodecSpec, StageConfig
from forgelib.compress.encode import Encoded, encode_tensor


@dataclass
class Source:
    """A weight to encode: its group, the tensor, the reference its SNR is measured against,
    its calibration Hessian (VPTQ) and its stage-1 encoding (for ``keep``)."""

    name: str
    group: str
    tensor: torch.Tensor
    reference: torch.Tensor
    hessian: torch.Tensor | None = None
    kept: Encoded | None = None


def encode_sources(sources: list[Source], spec_for: Callable[[str], CodecSpec]) -> dict[str, Encoded]:
    from tqdm.auto import tqdm

    bar = tqdm(sources, desc="encode", unit="tensor", leave=False, disable=len(sources) < 50)
    return {s.name: encode_tensor(s.tensor, s.group, spec_for(s.group), hessian=s.hessian, kept=s.kept,
                                  reference=s.reference) for s in bar}


def _distortion(encoded: dict[str, Encoded], total_params: int) -> float:
    return sum(e.n_params / total_params * (e.noise / e.signal if e.signal > 0 else 0.0)
               for e in encoded.values())


def search_target(sources: list[Source], stage: StageConfig, target_bytes: int,
                  size_of: Callable[[dict[str, Encoded]], int],
                  score: Callable[[dict[str, Encoded]], float] | None = None) -> tuple[dict[str, Encoded], dict]:
    """``(encoded weights, report)``; ``report['met']`` says whether the target was reached.

    ``score(encoded)``: lower is better; default the distortion proxy."""
    start = time.perf_counter()
    groups = sorted({s.group for s in sources})
    total = sum(s.tensor.numel() for s in sources)
    score = score or (lambda encoded: _distortion(encoded, total))
    cache: dict[tuple[str, int], dict[str, Encoded]] = {}

    def at(group: str, rung: int) -> dict[str, Encoded]:
        if (group, rung) not in cache:
            spec = stage.rungs(group)[rung]
            cache[(group, rung)] = encode_sources([s for s in sources if s.group == group], lambda g: spec)
        return cache[(group, rung)]

    level = {g: 0 for g in groups}

    def chosen() -> dict[str, Encoded]:
        return {name: e for g in groups for name, e in at(g, level[g]).items()}

    def with_rung(group: str, rung: int) -> dict[str, Encoded]:
        return {name: e for g in groups for name, e in at(g, rung if g == group else level[g]).items()}

    current = chosen()
    size, current_score = size_of(current), score(current)
    path = [{"group": None, "rung": None, "bytes": size, "score": current_score}]
    while size > target_bytes:
        best = None
        for g in groups:
            for rung in range(level[g] + 1, len(stage.rungs(g))):
                candidate = with_rung(g, rung)
                candidate_size = size_of(candidate)
                if candidate_size >= size:  # rung sizes need not be monotone (codebooks, headers)
                    continue
                candidate_score = score(candidate)
                cost = (candidate_score - current_score) / (size - candidate_size)
                if best is None or cost < best[0]:
                    best = (cost, g, rung, candidate_size, candidate_score)
        if best is None:
            break  # no group has a smaller rung left
        _, g, rung, size, current_score = best
        level[g] = rung
        path.append({"group": g, "rung": rung, "bytes": size, "score": current_score})
    while size <= target_bytes:  # spend the slack: any single-group change that fits and scores better
        best = None
        for g in groups:
            for rung in range(len(stage.rungs(g))):
                if rung == level[g]:
                    continue
                candidate = with_rung(g, rung)
                candidate_size = size_of(candidate)
                if candidate_size <= target_bytes:
                    candidate_score = score(candidate)
                    if candidate_score < current_score and (best is None or candidate_score < best[0]):
                        best = (candidate_score, g, rung, candidate_size)
        if best is None:
            break
        current_score, g, rung, size = best
        level[g] = rung
        path.append({"group": g, "rung": rung, "bytes": size, "score": current_score, "refine": True})
    report = {
        "target_bytes": target_bytes, "bytes": size, "met": size <= target_bytes,
        "choice": {g: stage.rungs(g)[level[g]].to_params() for g in groups},
        "path": path, "candidates_encoded": len(cache), "search_seconds": time.perf_counter() - start,
    }
    return chosen(), report
