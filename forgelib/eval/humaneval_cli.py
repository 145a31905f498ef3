"""`forge eval --benchmark humaneval`: generate completions and score them in the sandbox, or
score a human-eval sample file made elsewhere (no model needed)."""

from __future__ import annotations

from pathlib import Path

from forgelib.errors import ForgeError


def parse_ks(ks: str) -> tuple[int, ...]:
    try:
        values = tuple(int(k) for k in ks.split(",") if k.strip())
    except ValueError:
        raise ForgeError(f"--k: expected a comma list of positive integers, got {ks!r}") from None
    if not values or min(values) < 1:
        raise ForgeError(f"--k: expected a comma list of positive integers, got {ks!r}")
    return values


def run_humaneval(model_dir: Path | None, *, samples: Path | None, ks: str = "1", limit: int | None = None,
                  n_samples: int = 1, temperature: float = 0.0, max_new_tokens: int = 384, seed: int = 0) -> dict:
    from forgelib.eval.humaneval import generate_samples, load_problems, load_samples, score_samples

    k = parse_ks(ks)
    if samples is not None:
        if model_dir is not None:
            raise ForgeError("--samples scores completions made elsewhere; do not also pass a model")
        return score_samples(load_samples(samples), k=k)
    if model_dir is None:
        raise ForgeError("--benchmark humaneval needs --model-path DIR (to generate) or --samples FILE.jsonl (to score)")
    if n_samples > 1 and temperature <= 0:
        raise ForgeError("--n-samples > 1 needs --temperature > 0 (greedy samples are identical)")
    from forgelib.compress.loader import load_model_any

    model, tokenizer = load_model_any(model_dir)
    made = generate_samples(model, tokenizer, load_problems(), n_samples=n_samples, temperature=temperature,
                            max_new_tokens=max_new_tokens, limit=limit, seed=seed)
    return score_samples(made, k=k)


def score_phase(model_path: Path, *, limit: int, max_new_tokens: int, samples_out: Path | None = None) -> dict:
    """One `humaneval@NAME` stage: greedy pass@1 of a phase's model on the first ``limit`` problems.

    Returns the metrics (scalars only, so ``dvc metrics diff`` lines them up across phases);
    the completions and their outcomes go to ``samples_out`` as human-eval sample JSONL.
    """
    import json
    import time

    from forgelib.compress.loader import load_model_any
    from forgelib.eval.humaneval import generate_samples, load_problems, score_samples
    from forgelib.io import write_text_atomic

    start = time.perf_counter()
    model, tokenizer = load_model_any(model_path)
    made = generate_samples(model, tokenizer, load_problems(), max_new_tokens=max_new_tokens, limit=limit)
    generated = time.perf_counter() - start
    scored = score_samples(made, k=(1,))
    passed = [ok for outcomes in scored["results"].values() for ok in outcomes]
    if samples_out is not None:
        lines = [json.dumps({**sample, "passed": ok}) for sample, ok in zip(made, passed)]
        write_text_atomic(samples_out, "\n".join(lines) + "\n")
    return {
        "pass@1": scored["pass@1"], "n_problems": len(scored["results"]), "n_passed": sum(passed),
        "n_samples": scored["n_samples"], "model": str(model_path), "max_new_tokens": max_new_tokens,
        "generate_seconds": round(generated, 1), "seconds": round(time.perf_counter() - start, 1),
    }
