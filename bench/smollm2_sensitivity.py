"""Which of SmolLM2's tensor groups cost its coding capability when compressed, and a plan that
gives them the bits (issue 10, item 5; report only, not part of ``make real-model``).

Two parts, both on the converted SmolLM2-135M-Instruct (``--model``):

1. **Sensitivity sweep.** One tensor group at a time (``attention``, ``mlp``, ``embeddings``:
   the embedding matrix is tied to the lm_head, so it is one tensor) is encoded with one
   candidate codec and decoded back into the otherwise full-precision model, and the model's
   code perplexity is measured (:func:`forgelib.eval.codeppl.code_perplexity`: seeded windows of
   the Python standard library, held out from calibration). Each row reports the group's payload
   bits per weight, its SNR and the change in log-perplexity, so a reader sees what each group
   costs at each bit width. Log-perplexity changes of separately compressed groups roughly add
   up; the plan's own row checks that.
2. **The plan, through the real pipeline.** The ``--plan`` config (a ``compress:`` section, as in
   the SmolLM2 profile, default ``forgelib/profiles/smollm2.yaml``) is run by
   :func:`forgelib.compress.pipeline.compress_model`, exactly as the ``compress`` stage runs it:
   stage 1, then stage 2 from stage 1's output. The final container is loaded back
   (:func:`forgelib.compress.loader.load_compressed`, what ``forge compression decompress``
   writes), its bits per parameter are the container file's bytes (header included) over every
   parameter, and it is scored on code perplexity and on HumanEval pass@1 (greedy, the first
   ``--humaneval-n`` problems) beside the uncompressed model on the same problems. The paired
   difference of pass@1 gets a 95% interval: the normal approximation to the per-problem
   differences (a problem counts -1, 0 or +1), which is what the McNemar-style comparison of two
   models on one problem set reduces to.

Calibration (the GPTQ/VPTQ Hessians) uses stdlib windows from files disjoint from the perplexity
windows (:func:`forgelib.eval.codeppl.disjoint_windows`); HumanEval's problems are not in the
stdlib. HumanEval is the test set: no choice here reads it, the sweep reads code perplexity.

Run: ``python bench/smollm2_sensitivity.py --model DIR --json-out reports/smollm2/sensitivity.json``
(DIR: the converted model, ``models/base/ancestor`` after ``make real-model``).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from forgelib.compress.codecs.registry import decode_entry, get_codec
from forgelib.compress.config import CodecSpec
from forgelib.compress.container import CONTAINER_NAME
from forgelib.compress.encode import encode_tensor, summarize
from forgelib.compress.groups import group_of
from forgelib.compress.hessian import collect_hessians
from forgelib.compress.loader import load_compressed
from forgelib.compress.pipeline import compress_model
from forgelib.config import load_section
from forgelib.eval.codeppl import calibration_batches, code_perplexity
from forgelib.errors import ForgeError
from forgelib.eval.humaneval import load_problems, load_samples, run_humaneval
from forgelib.io import write_json
from forgelib.models.hf import load_model
from forgelib.runtime import configure_torch

DEFAULT_MODEL = "models/base/ancestor"
DEFAULT_PLAN = Path(__file__).resolve().parents[1] / "forgelib" / "profiles" / "smollm2.yaml"
SWEPT = ("attention", "mlp", "embeddings")
# (codec, settings, use the calibration Hessian) per group; the first rows are the 4-5 bit
# candidates, the last the previous profile's codecs, for comparison.
CANDIDATES: dict[str, list[tuple[str, dict, bool]]] = {
    "attention": [("gptq", {"bits": 3, "group_size": 64}, True), ("gptq", {"bits": 4, "group_size": 64}, True),
                  ("gptq", {"bits": 4, "group_size": 64}, False), ("gptq", {"bits": 4, "group_size": 128}, True),
                  ("gptq", {"bits": 5, "group_size": 64}, True), ("gptq", {"bits": 5, "group_size": 64}, False),
                  ("gptq", {"bits": 6, "group_size": 64}, True),
                  ("vptq", {"v": 2, "k": 64, "k_res": 16, "kmeans_iters": 8, "codebook_bits": 8}, True)],
    "mlp": [("gptq", {"bits": 3, "group_size": 64}, True), ("gptq", {"bits": 4, "group_size": 64}, True),
            ("gptq", {"bits": 4, "group_size": 64}, False), ("gptq", {"bits": 4, "group_size": 128}, True),
            ("gptq", {"bits": 5, "group_size": 64}, True),
            ("vptq", {"v": 2, "k": 64, "k_res": 16, "kmeans_iters": 8, "codebook_bits": 8}, True)],
    "embeddings": [("gptq", {"bits": 4, "group_size": 64}, True), ("gptq", {"bits": 4, "group_size": 64}, False),
                   ("gptq", {"bits": 5, "group_size": 64}, True), ("gptq", {"bits": 6, "group_size": 64}, True),
                   ("int8", {}, False), ("hyperfn", {"n_points": 256}, False)],
}


def hessians_of(model, batches) -> dict[str, torch.Tensor]:
    """Every linear weight's input Hessian; the tied embedding gets the lm_head's
    (:func:`forgelib.compress.hessian.collect_hessians`)."""
    names = {n for n, p in model.named_parameters() if p.dim() == 2}
    return collect_hessians(model, batches, names, max_batches=len(batches))


def sweep(model, tokenizer, hessians, ppl_kwargs, base_log_ppl: float) -> list[dict]:
    params = dict(model.named_parameters())
    rows = []
    for group in SWEPT:
        names = [n for n, p in params.items() if group_of(n, p.dim()) == group]
        saved = {n: params[n].detach().clone() for n in names}
        for codec, settings, use_h in CANDIDATES[group]:
            start = time.perf_counter()
            spec = CodecSpec.of(codec, **settings)
            encoded = {n: encode_tensor(saved[n], group, spec, hessian=hessians.get(n) if use_h else None)
                       for n in names}
            seconds = time.perf_counter() - start
            with torch.no_grad():
                for n, e in encoded.items():
                    params[n].copy_(decode_entry(e.entry))
            ppl = code_perplexity(model, tokenizer, **ppl_kwargs)["perplexity"]
            with torch.no_grad():
                for n in names:
                    params[n].copy_(saved[n])
            size = summarize(encoded)["groups"][group]
            row = {"group": group, "codec": codec, "settings": settings,
                   "hessian": use_h and get_codec(codec).needs_hessian, "n_params": size["n_params"],
                   "bits_per_weight": size["bits_per_param"], "snr_db": size["snr_db"], "perplexity": ppl,
                   "delta_log_ppl": math.log(ppl) - base_log_ppl, "encode_seconds": round(seconds, 1)}
            rows.append(row)
            print(f"{group:10s} {codec:7s} {str(settings):55s} H={row['hessian']!s:5s} "
                  f"{row['bits_per_weight']:5.2f} b/w  SNR {row['snr_db'] or 0:5.1f} dB  ppl {ppl:7.3f} "
                  f"(dlog {row['delta_log_ppl']:+.4f})  {seconds:5.1f} s", file=sys.stderr, flush=True)
    return rows


def paired_difference(a: list[bool], b: list[bool]) -> dict:
    """pass@1 of b minus a on the same problems, with a 95% normal interval on the per-problem differences."""
    d = [int(y) - int(x) for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else 0.0
    half = 1.96 * sd / math.sqrt(n)
    return {"difference": mean, "ci95": [mean - half, mean + half], "n": n,
            "only_reference": sum(1 for x in d if x < 0), "only_compressed": sum(1 for x in d if x > 0)}


def humaneval_outcomes(model, tokenizer, n: int, max_new_tokens: int) -> tuple[dict, list[bool]]:
    run = run_humaneval(model, tokenizer, limit=n, max_new_tokens=max_new_tokens)
    return run.metrics(), [s["passed"] for s in run.samples]


def reference_outcomes(path: Path, n: int) -> tuple[dict, list[bool]]:
    rows = load_samples(path)
    problems = list(load_problems())[:n]
    if [r["task_id"] for r in rows] != problems or any("passed" not in r for r in rows):
        raise ForgeError(f"--reference-samples {path}: expected one greedy sample with 'passed' for each of "
                         f"HumanEval's first {n} problems, in order")
    passed = [bool(r["passed"]) for r in rows]
    return {"pass@1": sum(passed) / n, "n_problems": n, "n_passed": sum(passed), "from": str(path)}, passed


def commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"HF model directory (default {DEFAULT_MODEL})")
    parser.add_argument("--plan", type=Path, default=DEFAULT_PLAN,
                        help="YAML file whose `compress:` section is the plan (default: the SmolLM2 profile)")
    parser.add_argument("--skip-sweep", action="store_true", help="only run the plan")
    parser.add_argument("--ppl-tokens", type=int, default=8192)
    parser.add_argument("--ppl-seq-len", type=int, default=512)
    parser.add_argument("--calibration-windows", type=int, default=32)
    parser.add_argument("--calibration-seq-len", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--humaneval-n", type=int, default=84, help="first N HumanEval problems (0 skips it)")
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--reference-samples", type=Path, default=None,
                        help="a samples JSONL (task_id, completion, passed) of the uncompressed model made with the "
                             "same --humaneval-n and --max-new-tokens: reused instead of generating them again")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_torch()
    wall = time.perf_counter()
    model, tokenizer = load_model(args.model)
    ppl_kwargs = {"max_tokens": args.ppl_tokens, "seq_len": args.ppl_seq_len, "seed": args.seed}
    base = code_perplexity(model, tokenizer, **ppl_kwargs)
    batches = calibration_batches(tokenizer, count=args.calibration_windows, seq_len=args.calibration_seq_len,
                                  batch_size=4, seed=args.seed, exclude=set(base["files"]))
    result: dict = {"model": str(args.model), "commit": commit(), "perplexity": base["perplexity"],
                    "ppl_tokens": base["n_tokens"], "ppl_files": len(base["files"]),
                    "calibration": {"windows": args.calibration_windows, "seq_len": args.calibration_seq_len,
                                    "disjoint_from_ppl_files": True}}
    if not args.skip_sweep:
        hessians = hessians_of(model, batches)
        result["sweep"] = sweep(model, tokenizer, hessians, ppl_kwargs, math.log(base["perplexity"]))

    config = load_section("compress", args.plan)
    with tempfile.TemporaryDirectory() as tmp:
        stats = compress_model(args.model, Path(tmp) / "out", config, calibration_batches=batches)
        final = load_compressed(Path(tmp) / "out" / "final" / CONTAINER_NAME)
        plan = {"plan_file": str(args.plan), "config": stats["config"],
                **{stage: {k: stats[stage][k] for k in ("bytes", "bits_per_param", "fraction_fp32",
                                                        "payload_bits_per_linear_weight", "snr_db")}
                   for stage in ("stage1", "final")},
                "final_input": stats["final"].get("input"), "n_params": stats["n_params"],
                "final_perplexity": code_perplexity(final, tokenizer, **ppl_kwargs)["perplexity"]}
        plan["final_delta_log_ppl"] = math.log(plan["final_perplexity"]) - math.log(base["perplexity"])
        if args.humaneval_n:
            if args.reference_samples:
                ref_metrics, ref = reference_outcomes(args.reference_samples, args.humaneval_n)
            else:
                ref_metrics, ref = humaneval_outcomes(model, tokenizer, args.humaneval_n, args.max_new_tokens)
            comp_metrics, comp = humaneval_outcomes(final, tokenizer, args.humaneval_n, args.max_new_tokens)
            plan["humaneval"] = {"n": args.humaneval_n, "max_new_tokens": args.max_new_tokens,
                                 "reference": ref_metrics, "compressed": comp_metrics,
                                 "ratio": comp_metrics["pass@1"] / ref_metrics["pass@1"] if ref_metrics["pass@1"] else None,
                                 "paired": paired_difference(ref, comp)}
    result["plan"] = plan
    result["wall_s"] = round(time.perf_counter() - wall, 1)
    print(yaml.safe_dump({k: v for k, v in result.items() if k != "sweep"}, sort_keys=False))
    if args.json_out:
        write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
