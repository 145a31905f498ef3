"""Grokfast on the paper's setup: steps to 95% validation accuracy, side by side, with a cap.

Setup (Lee et al., arXiv 2405.20233, following Power et al. 2022 and the reference code):
x*y mod 97 with x in [0, 97), y in [1, 97) (9,312 equations), a random 50% train split; a
decoder with 2 layers, width 128, 4 heads, learned positions, GELU MLP; sequences
``x op y =`` with the loss on the answer token only; Adam (the reference code's default, with
L2-style ``weight_decay``) lr 1e-3, betas (0.9, 0.98), linear warmup over 10 updates; batch 512
over shuffled epochs. As in the reference block, each residual branch is added to the
*normalised* input (x = ln(x); x = x + attn(x)).

Runs (``--filters``):

- ``baseline``: no filter, weight decay 0 (the reference code's baseline command);
- ``baseline_matched_wd``: no filter, weight decay 0.005 (the EMA run's): the honest control,
  since weight decay alone speeds up grokking;
- ``ema``: alpha 0.98, lamb 2.0, weight decay 0.005;
- ``ma``: window 100, lamb 5.0, weight decay 0.01.

``--digits`` writes each operand as two tokens, its zero-padded decimal digits (``3 0 * 1 9 =``:
six positions; the answer stays one token of p classes). Everything else is unchanged, so the
pair of runs isolates what reading numbers from digits costs: the embedded default's suite writes
``30*19%97=`` in characters, and its Llama does not grok x*y mod 97 (``bench/grok_modular.py``).
``--digit-answer`` (with ``--digits``) also writes the answer as its two digits, predicted one
after the other with teacher forcing (``3 0 * 1 9 = 8`` scores ``8`` at ``=`` and ``5`` at ``8``;
the loss is the mean over both, exact match needs both), as the suite writes its answers.
``--adamw-weight-decay W`` swaps each run's Adam + L2 weight decay for AdamW with decoupled
weight decay W (the embedded default's optimizer). ``--history-every N`` keeps every Nth
evaluation in the JSON: step, validation and train exact match, mean training loss.

Validation accuracy is measured every ``--eval-every`` steps on the whole validation set in one
batch. A run that does not reach 95% by ``--max-steps`` reports null; a speedup against a
baseline that hit the cap uses the cap and is a lower bound (``lower_bound``). A speedup whose
runs were not requested is null.

    python bench/grokfast.py --filters ema --max-steps 3000
    python bench/grokfast.py --json --max-steps 50000      # all four runs (hours on a CPU)

Measured (2 threads of an AVX-512 Xeon, seed 0): ``--filters ema,baseline_matched_wd --max-steps
20000 --threads 2``: EMA reaches 95% validation accuracy at step 1,030, the matched-weight-decay
baseline at 4,400, a 4.3x speedup (metrics/bench/grokfast_paper.json; 5.5 min); a re-run at c0b2b33
gave 1,550 and 10,800, 7.0x (metrics/bench/grokfast_paper_rerun.json; cause not found). With ``--digits``
the same decoder, split, optimizer and filter grok about 20x later: validation accuracy 0.145 at
step 15,000 (``--max-steps 15000 --eval-every 50``, 8.8 min; metrics/bench/grokfast_digits_15k.json)
and 95% at step 20,200 (``--digits --filters ema --max-steps 45000 --eval-every 100``, 31 ms/step,
10.3 min; metrics/bench/grokfast_digits.json), 19.6x the one-token run's 1,030. Reading each
operand from two digit tokens makes grokking x*y mod 97 twenty times slower on the paper's model;
the embedded default's Llama (width 64, the answer as digits too, AdamW with decoupled weight
decay 1.0) did not grok it in 40,000 steps (bench/grok_modular.py).

Writing the answer as digits too is what stops it. ``--digits --digit-answer --filters ema
--max-steps 45000 --eval-every 100 --history-every 10 --threads 2`` (45 ms/step with the train
evaluations, 34 min; metrics/bench/grokfast_digit_answer.json): the decoder does not even fit its
train pairs: the training loss goes from 2.31 to 2.19 nats per answer digit (a uniform guess over
ten digits is 2.30), train exact match ends at 0.033, validation at 0.022 (chance 0.010). With
the embedded default's optimizer instead (``--adamw-weight-decay 1.0``, 30,000 steps, 47 ms/step;
metrics/bench/grokfast_digit_answer_adamw.json) it memorises them (train exact match 0.87 at step
5,000, 0.98 at 30,000) and validation never exceeds 0.026: exactly what the embedded Llama does
on the suite's format. The digit answer alone turns grokking at step 20,200 into no
generalisation in 30,000-45,000 steps, under either optimizer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from forgelib.train.grokfast import apply_grad_filter_, gradfilter_ema, gradfilter_ma

RUNS = {
    "baseline": {"filter": None, "weight_decay": 0.0},
    "baseline_matched_wd": {"filter": None, "weight_decay": 0.005},
    "ema": {"filter": "ema", "weight_decay": 0.005, "alpha": 0.98, "lamb": 2.0},
    "ma": {"filter": "ma", "weight_decay": 0.01, "window_size": 100, "lamb": 5.0},
}


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln_attn, self.ln_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, causal: torch.Tensor | None) -> torch.Tensor:
        """x: (B, T, dim). ``causal``: the causal mask's last k rows (k, T), which computes only the
        last k positions; ``None`` computes only the last position, which attends to all."""
        x = self.ln_attn(x)
        k = 1 if causal is None else causal.shape[0]
        query = x if k == x.shape[1] else x[:, -k:]  # x itself when all positions: MHA's self-attention path
        h = query + self.attn(query, x, x, attn_mask=causal, need_weights=False)[0]
        return h + self.mlp(self.ln_mlp(h))


class Decoder(nn.Module):
    def __init__(self, vocab: int, dim: int = 128, layers: int = 2, heads: int = 4, max_len: int = 5):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, dim), nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln_out, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor, answer_tokens: int = 1) -> torch.Tensor:
        """ids: (B, T) -> (B, vocab) at the last position, or (B, answer_tokens, vocab) at the last
        ``answer_tokens`` positions (teacher forcing: the input ends with the answer minus its last token)."""
        length = ids.shape[1]
        h = self.tokens(ids) + self.positions(torch.arange(length, device=ids.device))
        causal = torch.triu(torch.full((length, length), float("-inf"), device=ids.device), diagonal=1)
        for block in self.blocks[:-1]:
            h = block(h, causal)
        # Only the answer positions are scored, so the last block skips the other positions' queries
        # and MLPs: the same logits for about 30% less compute.
        if answer_tokens == 1:
            return self.head(self.ln_out(self.blocks[-1](h, None)[:, -1]))
        return self.head(self.ln_out(self.blocks[-1](h, causal[-answer_tokens:])))


def equations(op: str, p: int, digits: bool = False, digit_answer: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 4) inputs ``x op y =`` and (N,) answers; tokens p and p+1 are '=' and the operator.
    ``digits``: (N, 6) inputs ``x1 x0 op y1 y0 =``, each operand as its two decimal digits (tokens 0-9).
    ``digit_answer`` (with ``digits``): (N, 7) inputs ``x1 x0 op y1 y0 = a1`` and (N, 2) answers
    ``a1 a0``, the answer's two digits, for teacher forcing."""
    if digit_answer and not digits:
        raise ValueError("--digit-answer needs --digits")
    x, y = torch.cartesian_prod(torch.arange(p), torch.arange(1 if op in ("*", "/") else 0, p)).T
    if op == "*":
        answer = x * y % p
    elif op == "+":
        answer = (x + y) % p
    elif op == "-":
        answer = (x - y) % p
    else:  # x / y = x * y^(p-2) mod p (Fermat), p prime
        answer = x * torch.tensor([pow(int(v), p - 2, p) for v in y]) % p
    if digits:
        if p > 100:
            raise ValueError(f"--digits writes operands as two digits: p must be <= 100, got {p}")
        op_tok, eq_tok = torch.full_like(x, p + 1), torch.full_like(x, p)
        inputs = torch.stack([x // 10, x % 10, op_tok, y // 10, y % 10, eq_tok], dim=1)
        if digit_answer:
            return torch.cat([inputs, (answer // 10)[:, None]], 1), torch.stack([answer // 10, answer % 10], 1)
        return inputs, answer
    inputs = torch.stack([x, torch.full_like(x, p + 1), y, torch.full_like(x, p)], dim=1)
    return inputs, answer


def exact_match(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """Per row, whether every answer token's argmax is right ((B, V) / (B,) or (B, K, V) / (B, K))."""
    right = logits.argmax(-1) == answers
    return right if right.ndim == 1 else right.all(-1)


def steps_to_95(run: str, *, op: str, p: int, seed: int, max_steps: int, eval_every: int,
                batch_size: int = 512, digits: bool = False, digit_answer: bool = False,
                history: list | None = None, history_every: int = 1,
                adamw_weight_decay: float | None = None) -> tuple[int | None, float, float]:
    """Train one run; returns (steps to 95% val accuracy or None, final val acc, seconds per step).
    ``history``, if given, receives at every ``history_every``-th evaluation the step, validation
    and train exact match, and the mean training loss since the previous record.
    ``adamw_weight_decay``: AdamW with this decoupled weight decay instead of the run's Adam + L2."""
    settings = RUNS[run]
    torch.manual_seed(seed)
    inputs, answers = equations(op, p, digits, digit_answer)
    k = answers.shape[1] if answers.ndim == 2 else 1
    order = torch.randperm(len(inputs))
    train_idx, val_idx = order[: len(inputs) // 2], order[len(inputs) // 2:]
    model = Decoder(vocab=p + 2, max_len=inputs.shape[1])
    if adamw_weight_decay is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=settings["weight_decay"])
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=adamw_weight_decay)
    filter_state: dict = {}
    step, val_acc, started = 0, 0.0, time.perf_counter()
    evals, loss_sum, loss_n = 0, 0.0, 0
    while step < max_steps:
        shuffled = train_idx[torch.randperm(len(train_idx))]
        for batch in shuffled.split(batch_size):
            for group in optimizer.param_groups:  # the reference's LambdaLR: factor min(update, 10) / 10
                group["lr"] = 1e-3 * min(step, 10) / 10
            logits = model(inputs[batch], answer_tokens=k)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), answers[batch].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings["filter"] == "ema":
                filter_state = apply_grad_filter_(model, gradfilter_ema, filter_state,
                                                  alpha=settings["alpha"], lamb=settings["lamb"])
            elif settings["filter"] == "ma":
                filter_state = apply_grad_filter_(model, gradfilter_ma, filter_state,
                                                  window_size=settings["window_size"], lamb=settings["lamb"])
            optimizer.step()
            step += 1
            loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
            if step % eval_every == 0 or step == max_steps:
                evals += 1
                with torch.no_grad():
                    val_acc = float(exact_match(model(inputs[val_idx], answer_tokens=k), answers[val_idx]).float().mean())
                    if history is not None and evals % history_every == 0:
                        train_acc = float(exact_match(model(inputs[train_idx], answer_tokens=k), answers[train_idx]).float().mean())
                        history.append({"step": step, "val": round(val_acc, 4), "train": round(train_acc, 4),
                                        "loss": round(loss_sum / loss_n, 4)})
                        loss_sum, loss_n = 0.0, 0
                if val_acc >= 0.95:
                    return step, val_acc, (time.perf_counter() - started) / step
            if step == max_steps:
                break
    return None, val_acc, (time.perf_counter() - started) / step


def speedup(results: dict, slow: str, fast: str, cap: int) -> float | None:
    if slow not in results or fast not in results:
        return None
    return (results[slow]["steps_to_95"] or cap) / (results[fast]["steps_to_95"] or cap)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", default="*", choices=["*", "+", "-", "/"])
    parser.add_argument("--p", type=int, default=97)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=50_000)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--filters", default=",".join(RUNS), help="comma list of " + ", ".join(RUNS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (at most 2)")
    parser.add_argument("--digits", action="store_true", help="write each operand as two digit tokens")
    parser.add_argument("--digit-answer", action="store_true",
                        help="with --digits: the answer too as two digit tokens, predicted one after the other")
    parser.add_argument("--adamw-weight-decay", type=float, default=None,
                        help="AdamW with this decoupled weight decay instead of each run's Adam + L2 weight decay")
    parser.add_argument("--history-every", type=int, default=0,
                        help="record every Nth evaluation in the JSON: step, validation and train exact match, mean loss (0: none)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)
    runs = [r.strip() for r in args.filters.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown filter run {unknown[0]!r}; valid: {', '.join(RUNS)}")
    if args.digit_answer and not args.digits:
        parser.error("--digit-answer needs --digits")
    torch.set_num_threads(min(args.threads, 2))

    results = {}
    for run in runs:
        history: list = []
        steps, final_acc, per_step = steps_to_95(run, op=args.op, p=args.p, seed=args.seed,
                                                 max_steps=args.max_steps, eval_every=args.eval_every,
                                                 digits=args.digits, digit_answer=args.digit_answer,
                                                 history=history if args.history_every else None,
                                                 history_every=max(1, args.history_every),
                                                 adamw_weight_decay=args.adamw_weight_decay)
        results[run] = {"steps_to_95": steps, "final_val_acc": final_acc, "ms_per_step": 1000 * per_step}
        if args.history_every:
            results[run]["history"] = history
        if not args.json:
            print(f"{run:>20}: steps to 95% val acc = {steps if steps is not None else f'> {args.max_steps} (cap)'}"
                  f"  (val acc {final_acc:.3f}, {1000 * per_step:.1f} ms/step)", file=sys.stderr)
    out = {name: results.get(name, {"steps_to_95": None}) for name in RUNS}
    out.update({
        "digits": args.digits,
        "digit_answer": args.digit_answer,
        "adamw_weight_decay": args.adamw_weight_decay,
        "max_steps": args.max_steps,
        "speedup_ema": speedup(results, "baseline", "ema", args.max_steps),
        "speedup_ma": speedup(results, "baseline", "ma", args.max_steps),
        "speedup_ema_matched_wd": speedup(results, "baseline_matched_wd", "ema", args.max_steps),
        "lower_bound": any(results.get(b, {}).get("steps_to_95", 0) is None for b in ("baseline", "baseline_matched_wd")),
    })
    if not args.json:
        for key in ("speedup_ema", "speedup_ma", "speedup_ema_matched_wd"):
            if out[key] is not None:
                bound = ">= " if out["lower_bound"] else ""
                print(f"{key:>24}: {bound}{out[key]:.1f}x", file=sys.stderr)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
