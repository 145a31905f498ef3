"""BitNet b1.58 QAT on SmolLM2-135M: held-out code perplexity and HumanEval against PTQ
(issue 12, "real profile", report only; not part of ``make real-model``).

What it measures. Four arms start from the same HF checkpoint (``--model``):

- ``fp``: the checkpoint itself, no training (the reference);
- ``ptq``: post-hoc ternarization of every attention and MLP nn.Linear with the ``bitnet158``
  codec's :func:`~forgelib.compress.codecs.bitnet158.absmean_ternary` (``gamma * {-1, 0, 1}``,
  one absmean scale per tensor), no training;
- ``qat_warmup``: :func:`forgelib.train.bitnet_qat.attach` (BitLinear: absmean ternary weights,
  per-token absmax int8 activations, straight-through estimator), trained ``--steps`` steps with
  lambda ramped 0 -> 1 over the first ``--warmup`` steps (default: half of them), then
  :func:`~forgelib.train.bitnet_qat.ternarize_` (the saved form: a plain HF model);
- ``qat_step0``: the same with lambda = 1 from step 0.

Both QAT arms see the same batches in the same order, with the same seed, optimizer and learning
rate. Embeddings, the (tied) lm_head and the norms stay in full precision and are trained too.
Every arm is scored on:

- ``perplexity``: :func:`forgelib.eval.codeppl.code_perplexity` on seeded windows of the Python
  standard library's source (the same windows for every arm, checked), with the plain HF model
  (ternary weights, full-precision activations: what is saved). The ternary arms also report
  ``perplexity_int8_act``: the same weights run through BitLinear at lambda 1 (int8 activations),
  as QAT trained them.
- ``humaneval_pass_at_1``: :func:`forgelib.eval.humaneval.run_humaneval`, greedy, on the first
  ``humaneval_n`` problems (the same N for every arm). N is ``--humaneval-n`` unless the time
  budget ``--humaneval-seconds`` cannot hold it: the script first times one worst-case
  generation (``--max-new-tokens`` tokens, no early stop) and lowers N so that every scored arm
  fits; the JSON says which N was used.

Training text and disjointness. Training windows come from the same corpus, the stdlib's
``.py`` files, but never from a file the evaluation draws from: the evaluation's file list (the
``files`` that :func:`code_perplexity` returns for the ``fp`` arm) is removed from the stdlib
listing before the training files are chosen, so no training token comes from a file that holds
an evaluation window. The remaining files are shuffled with ``random.Random(seed + 1)``; each
contributes one window of ``--seq-len`` tokens from its start (files shorter than that are
skipped) until ``steps * batch_size`` windows exist. The loss is next-token cross entropy on
every token of the window.

Deviations from the Hugging Face "Fine-tuning LLMs to 1.58bit" recipe:

- The training text is Python source (the stdlib) instead of FineWeb-edu: nothing can be
  downloaded here. It is also the evaluation domain (on disjoint files), which favours every
  trained arm over ``ptq``/``fp`` in a way the recipe's general-text fine-tune would not.
- 50 steps of a few thousand tokens each, on one CPU thread, instead of thousands of steps over
  billions of tokens: the figures say what 50 steps recover, not where QAT converges.
- The warm-up ramps lambda linearly over half the steps (the recipe's linear lambda schedule,
  compressed to this run's length); the learning rate is constant (``--lr``, default 1e-4, the
  recipe's value) with AdamW, no weight decay, gradients clipped at norm 1.
- Evaluation uses the saved plain HF model (full-precision activations), as Forge ships it;
  ``perplexity_int8_act`` gives the int8-activation figure.

How to run (1 torch thread; SmolLM2-135M fp32 needs about 3 GB of RAM while training)::

    make real-model       # creates models/base/ancestor (the SmolLM2 profile's ancestor)
    FORGE_NUM_THREADS=1 python bench/bitnet_smollm2.py --json --out metrics/bench/bitnet_smollm2.json
    python bench/bitnet_smollm2.py --model /path/to/hf_dir --steps 5 --humaneval-n 2   # a quick look

Measured 2026-11-30 on SmolLM2-135M-Instruct (fp32), 1 CPU thread, seed 0, defaults (50 steps of
4 x 128 tokens, lr 1e-4, warm-up 25 steps; perplexity on 4096 predicted tokens, 17 stdlib files,
256-token windows; HumanEval on the first 16 problems, greedy, 96 new tokens at most: the 420 s
budget held 16, not 40), ``FORGE_NUM_THREADS=1 python bench/bitnet_smollm2.py --model
/tmp/llx/smollm2 --json --out metrics/bench/bitnet_smollm2.json``, 19.6 min wall:

==========  ==========  ===============  ==============  ===========  =======
arm         perplexity  ppl int8 act     train loss 1st  last         pass@1
==========  ==========  ===============  ==============  ===========  =======
fp          7.94        -                -               -            0/16
ptq         7.9e7       9.2e7            -               -            0/16
qat_warmup  6026        6085             2.94            8.14         0/16
qat_step0   4801        4832             17.12           7.53         0/16
==========  ==========  ===============  ==============  ===========  =======

About 330 s of training per QAT arm. 50 steps of QAT take the ternary model from PTQ's 7.9e7
down four orders of magnitude, but nowhere near full precision (7.94): 200k tokens cannot
rebuild a 135M model's ternary weights. The warm-up arm's loss rises from 2.9 to 13.5 while
lambda ramps and then has only 25 fully quantized steps to recover; quantizing from step 0 gives
the full 50 and ends slightly lower (4801 vs 6026). That is the same order, consistent with the
published observation for SmolLM-135M of similar final perplexity, but not equal; one seed, no
spread. The fp checkpoint itself passes 0 of these 16 HumanEval problems at this token cap, so
HumanEval cannot separate the arms here: every arm scores 0/16.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from forgelib.compress.codecs.bitnet158 import absmean_ternary
from forgelib.errors import ForgeError
from forgelib.eval.codeppl import code_perplexity, disjoint_windows
from forgelib.eval.humaneval import load_problems, run_humaneval
from forgelib.io import write_json
from forgelib.models.hf import load_model
from forgelib.runtime import configure_torch
from forgelib.train import bitnet_qat
from forgelib.train.config import BitNetQATConfig

ARMS = ("fp", "ptq", "qat_warmup", "qat_step0")
DEFAULT_MODEL = "models/base/ancestor"


def ptq_(model) -> list[str]:
    """Ternarize every attention and MLP nn.Linear weight in place with the bitnet158 codec's quantizer."""
    chosen = bitnet_qat.in_groups(BitNetQATConfig().modules)
    names = [name for name, m in model.named_modules() if type(m) is torch.nn.Linear and chosen(name)]
    with torch.no_grad():
        for name in names:
            weight = model.get_submodule(name).weight
            trits, gamma = absmean_ternary(weight)
            weight.copy_(trits * gamma + 0.0)
    return names


def train_qat(model, windows: list[list[int]], *, steps: int, batch_size: int, warmup: int, lr: float,
              seed: int) -> dict:
    """QAT ``steps`` steps on ``windows`` in order; leaves ``model`` ternarized (plain nn.Linear)."""
    torch.manual_seed(seed)
    swapped = bitnet_qat.attach(model, BitNetQATConfig(enabled=True, warmup_steps=warmup))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses, lambdas = [], []
    for step in tqdm(range(steps), desc=f"QAT warmup={warmup}", leave=False):
        lambdas.append(bitnet_qat.set_warmup_lambda(model, step, warmup))
        batch = torch.tensor(windows[step * batch_size : (step + 1) * batch_size])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    bitnet_qat.ternarize_(model)
    return {"train_loss_first": losses[0], "train_loss_last": losses[-1], "train_losses": [round(x, 4) for x in losses],
            "lambda_first": lambdas[0], "lambda_last": lambdas[-1], "quantized_modules": len(swapped)}


def int8_act_perplexity(model, tokenizer, ppl_kwargs: dict) -> float:
    """Perplexity of the ternary model run through BitLinear at lambda 1 (int8 activations); restores it."""
    bitnet_qat.attach(model, BitNetQATConfig(enabled=True, warmup_steps=0))
    bitnet_qat.set_warmup_lambda(model, 0, 0)
    try:
        return code_perplexity(model, tokenizer, **ppl_kwargs)["perplexity"]
    finally:
        bitnet_qat.ternarize_(model)  # ternary weights are a fixed point: only swaps back


def worst_case_problem_seconds(model, tokenizer, max_new_tokens: int) -> float:
    """Seconds to generate ``max_new_tokens`` greedy tokens for HumanEval/0 with no early stop."""
    prompt = next(iter(load_problems().values()))["prompt"].rstrip()
    enc = tokenizer(prompt, return_tensors="pt")
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                       top_k=None, pad_token_id=tokenizer.eos_token_id)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"HF model directory (default {DEFAULT_MODEL}, which `make real-model` creates)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=None, help="lambda warm-up steps for qat_warmup (default steps // 2)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128, help="training window length in tokens")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ppl-tokens", type=int, default=4096, help="predicted tokens in the held-out perplexity")
    parser.add_argument("--ppl-seq-len", type=int, default=256)
    parser.add_argument("--humaneval-n", type=int, default=40, help="first N HumanEval problems (0 skips HumanEval)")
    parser.add_argument("--humaneval-seconds", type=float, default=420.0,
                        help="time budget for HumanEval over all arms; N is lowered to fit it")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="HumanEval completion length cap")
    parser.add_argument("--json", action="store_true", help="print the result object as JSON")
    parser.add_argument("--out", type=Path, default=None, help="also write the result object here")
    args = parser.parse_args(argv)

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise ForgeError(f"--arms: unknown arm(s) {bad or arms}; choose from {list(ARMS)}")
    warmup = args.steps // 2 if args.warmup is None else args.warmup
    if not 0 < warmup < args.steps:
        raise ForgeError(f"--warmup must be in 1..{args.steps - 1} so that qat_warmup ends fully ternary, got {warmup}")
    configure_torch()
    wall = time.perf_counter()
    ppl_kwargs = {"max_tokens": args.ppl_tokens, "seq_len": args.ppl_seq_len, "seed": args.seed}

    # The evaluation windows first: their files are excluded from training (module doc).
    model, tokenizer = load_model(args.model)
    t0 = time.perf_counter()
    fp_ppl = code_perplexity(model, tokenizer, **ppl_kwargs)
    fp_ppl_seconds = time.perf_counter() - t0
    eval_files = fp_ppl["files"]

    n_problems = 0
    per_problem_s = None
    if args.humaneval_n > 0:
        per_problem_s = worst_case_problem_seconds(model, tokenizer, args.max_new_tokens)
        n_problems = min(args.humaneval_n, int(args.humaneval_seconds // (per_problem_s * len(arms))))
        print(f"HumanEval: {per_problem_s:.1f} s worst case per problem -> N = {n_problems}", file=sys.stderr)

    windows = None
    if any(a.startswith("qat") for a in arms):
        windows = disjoint_windows(tokenizer, set(eval_files), count=args.steps * args.batch_size,
                                   seq_len=args.seq_len, seed=args.seed)

    results = {}
    for arm in arms:
        start = time.perf_counter()
        if model is None:
            model, tokenizer = load_model(args.model)
        entry: dict = {}
        if arm == "ptq":
            entry["quantized_modules"] = len(ptq_(model))
        elif arm.startswith("qat"):
            entry.update(train_qat(model, windows, steps=args.steps, batch_size=args.batch_size,
                                   warmup=warmup if arm == "qat_warmup" else 0, lr=args.lr, seed=args.seed))
        entry["train_seconds"] = round(time.perf_counter() - start, 1)
        if arm == "fp":
            ppl, entry["train_seconds"] = fp_ppl, 0.0
        else:
            ppl = code_perplexity(model, tokenizer, **ppl_kwargs)
            if ppl["files"] != eval_files:
                raise ForgeError(f"bitnet_smollm2: arm {arm} was scored on other windows than fp")
            entry["perplexity_int8_act"] = int8_act_perplexity(model, tokenizer, ppl_kwargs)
        entry["perplexity"] = ppl["perplexity"]
        entry["ppl_tokens"] = ppl["n_tokens"]
        if n_problems > 0:
            run = run_humaneval(model, tokenizer, k=(1,), limit=n_problems, max_new_tokens=args.max_new_tokens,
                                seed=args.seed)
            entry["humaneval_pass_at_1"] = run.report["pass@1"]
            entry["humaneval_passed"] = sum(s["passed"] for s in run.samples)
            entry["humaneval_seconds"] = round(run.seconds, 1)
        else:
            entry["humaneval_pass_at_1"] = None
        entry["humaneval_n"] = n_problems
        entry["seconds"] = round(time.perf_counter() - start + (fp_ppl_seconds if arm == "fp" else 0.0), 1)
        results[arm] = entry
        print(f"{arm}: ppl {entry['perplexity']:.4g}  humaneval {entry['humaneval_pass_at_1']}  "
              f"{entry['seconds']} s", file=sys.stderr)
        model = None  # the next arm starts from the checkpoint again

    result = {
        "model": str(args.model),
        "steps": args.steps,
        "arms": results,
        "notes": {
            "warmup_steps": warmup, "batch_size": args.batch_size, "seq_len": args.seq_len, "lr": args.lr,
            "seed": args.seed, "ppl_tokens": args.ppl_tokens, "ppl_seq_len": args.ppl_seq_len,
            "ppl_files": len(eval_files), "train_windows_disjoint_from_eval_files": True,
            "humaneval": f"first {n_problems} problems, greedy, max_new_tokens {args.max_new_tokens}",
            "humaneval_worst_case_seconds_per_problem": None if per_problem_s is None else round(per_problem_s, 1),
            "torch_threads": torch.get_num_threads(),
            "training_text": "Python stdlib source (files disjoint from the perplexity windows), not FineWeb-edu",
            "wall_seconds": round(time.perf_counter() - wall, 1),
        },
    }
    if args.out is not None:
        write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
