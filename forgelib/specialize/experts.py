"""Training SVF experts, and the baselines they are measured against at matched data and steps.

Transformer² (Sun et al. 2025, arXiv 2501.06252) trains one z vector per task with REINFORCE:
sample an answer from the adapted model, reward it +1 when it is exactly right and -1 otherwise,
and step ``-reward * log p(answer)``, optionally plus ``kl_coef * KL(base || adapted)`` on the
sampled tokens (the reference code's ``kl_ref_coeff``, 0 by default there). This file has that
(:func:`reinforce_loss`) and a cross-entropy variant (:func:`ce_loss`: the teacher-forced answer
loss through ``W'``; the paper's ablations also train SVF with next-token prediction).

Which is the default (``specialize.svf.method``) is decided on validation accuracy; see
:class:`forgelib.specialize.config.SVFConfig`. Both are reported.

Every trainer below runs the same loop (:func:`optimize`: AdamW, warmup + cosine from
:mod:`forgelib.train.schedule`, gradient-norm clipping) on the same batches of the family's train
rows, in the same order (``infinite_batches`` with one seed), for the same number of steps, so
SVF, the rank-r LoRA (``peft``) on the same matrices and the full fine-tune differ only in what
they train. REINFORCE takes ``batch_size // samples`` prompts per step with ``samples`` answers
each, so its steps see as many rows as the others' (drawn from the same train rows).

Deviations from the reference code, and why: Adam's lr 2e-3 and a grad-norm clip of 1e-3 there
move z by at most ~0.3 over our 150 steps (its runs are far longer); we use lr 0.03 and clip 1.0
for every method, chosen on validation. The reward is not normalised (reference: ``rw_norm`` 0).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from forgelib.data.batching import IGNORE, collate, encode_rows, infinite_batches
from forgelib.errors import ForgeError
from forgelib.eval.scoring import exact_match
from forgelib.specialize.svf import ADAPTED, Expert, Factors, init_expert, svf_applied, svf_forward
from forgelib.train.schedule import learning_rate


@contextlib.contextmanager
def frozen(model) -> Iterator:
    """The model's own parameters need no gradient while only z (or adapters) train."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def optimize(params: Sequence[Tensor], loss_at: Callable[[int], Tensor], *, steps: int, lr: float,
             warmup_steps: int, grad_clip: float, desc: str) -> list[float]:
    """``steps`` AdamW updates of ``params`` on ``loss_at(step)``; returns the loss of every step."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    losses = []
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=1.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, peak=lr, warmup_steps=warmup_steps, total_steps=steps)
        loss = loss_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def batch_stream(tokenizer, rows: Sequence[dict], *, batch_size: int, seed: int,
                 encoded: Sequence | None = None) -> Iterator[dict]:
    """The shuffled batches every method of one comparison sees, in the same order (``encoded``:
    rows already tokenized as ``(ids, labels)``, instead of ``<bos> prompt answer <eos>``)."""
    encoded = encode_rows(tokenizer, rows) if encoded is None else encoded
    return infinite_batches(encoded, batch_size=batch_size, pad_id=tokenizer.pad_token_id, seed=seed)


def ce_loss(model, svd: Mapping[str, Factors], expert: Expert, max_mult: float, batch: dict) -> Tensor:
    """Teacher-forced answer cross-entropy through the adapted weights."""
    return svf_forward(model, svd, expert, max_mult, **batch).loss


def answer_log_probs(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row summed log-probability of the labelled tokens, and the (B, T-1, V) log-softmax."""
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = labels[:, 1:]
    mask = targets != IGNORE
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask  # (B, T-1)
    return picked.sum(dim=1), log_probs


def split_rows(batch: dict) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt ids (with ``<bos>``) and reference answer ids (with ``<eos>``) of a collated batch."""
    prompts, answers = [], []
    for ids, labels, mask in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()):
        prompts.append([t for t, lab, m in zip(ids, labels, mask) if m and lab == IGNORE])
        answers.append([lab for lab in labels if lab != IGNORE])
    return prompts, answers


@torch.no_grad()
def sample_answers(model, prompt_ids: Sequence[list[int]], *, pad_id: int, eos_id: int, max_new_tokens: int,
                   temperature: float, seed: int) -> list[list[int]]:
    """One sampled answer per prompt: token ids up to and including the first ``<eos>``."""
    width = max(len(p) for p in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, ids in enumerate(prompt_ids):  # left padding: every prompt ends where generation starts
        input_ids[i, width - len(ids):] = torch.tensor(ids)
        mask[i, width - len(ids):] = 1
    torch.manual_seed(seed)
    out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=True,
                         temperature=temperature, top_k=0, top_p=1.0, eos_token_id=eos_id, pad_token_id=pad_id)
    answers = []
    for row in out[:, width:].tolist():
        answers.append(row[: row.index(eos_id) + 1] if eos_id in row else row)
    return answers


def reinforce_loss(model, tokenizer, svd: Mapping[str, Factors], expert: Expert, max_mult: float, batch: dict, *,
                   samples: int, max_new_tokens: int, temperature: float, kl_coef: float,
                   seed: int) -> tuple[Tensor, float]:
    """REINFORCE with the paper's +1/-1 exact-match reward on ``samples`` answers per prompt.

    Returns the loss and the mean reward. The answers are sampled with ``W'`` written into the
    model (no graph); their log-probabilities are recomputed through :func:`svf_forward` so the
    gradient reaches z. With ``kl_coef > 0`` the loss adds ``KL(base || adapted)`` summed over the
    sampled answer tokens, as the reference code does."""
    prompt_ids, reference_ids = split_rows(batch)
    prompt_ids = [p for p in prompt_ids for _ in range(samples)]
    references = tokenizer.batch_decode([r for r in reference_ids for _ in range(samples)], skip_special_tokens=True)
    with svf_applied(model, svd, {name: z.detach() for name, z in expert.items()}, max_mult):
        answers = sample_answers(model, prompt_ids, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                                 max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    texts = tokenizer.batch_decode(answers, skip_special_tokens=True)
    reward = torch.tensor([1.0 if hit else -1.0 for hit in exact_match(texts, references)])
    sampled = collate([(p + a, [IGNORE] * len(p) + a) for p, a in zip(prompt_ids, answers)], tokenizer.pad_token_id)
    inputs = {"input_ids": sampled["input_ids"], "attention_mask": sampled["attention_mask"]}
    log_likelihood, log_probs = answer_log_probs(svf_forward(model, svd, expert, max_mult, **inputs).logits,
                                                 sampled["labels"])
    loss = -(reward * log_likelihood).mean()
    if kl_coef > 0:
        with torch.no_grad():
            base_log_probs = F.log_softmax(model(**inputs).logits[:, :-1].float(), dim=-1)
        mask = (sampled["labels"][:, 1:] != IGNORE).unsqueeze(-1)
        kl = (base_log_probs.exp() * (base_log_probs - log_probs) * mask).sum() / len(answers)
        loss = loss + kl_coef * kl
    return loss, float(reward.mean())


def train_expert(model, tokenizer, svd: Mapping[str, Factors], rows: Sequence[dict], *, method: str, steps: int,
                 lr: float, batch_size: int, max_mult: float, grad_clip: float, warmup_steps: int, seed: int,
                 samples: int = 1, temperature: float = 1.0, kl_coef: float = 0.0, max_new_tokens: int = 8,
                 encoded: Sequence | None = None, init: Expert | None = None,
                 desc: str = "svf") -> tuple[Expert, list[float]]:
    """One z vector per adapted weight, trained on ``rows`` with ``method`` ``"ce"`` or ``"reinforce"``
    (``encoded``: the rows pre-tokenized, see :func:`batch_stream`), from ``init`` (default z = 0;
    the compress stage's refit starts from the carried experts).

    Returns the expert (detached) and the per-step history: the loss for ``ce``, the mean reward
    for ``reinforce``."""
    if method not in ("ce", "reinforce"):
        raise ForgeError(f"unknown SVF training method {method!r}; valid: ce, reinforce")
    if init is None:
        init = init_expert(svd)
    missing = [name for name in svd if name not in init]
    if missing:
        raise ForgeError(f"SVF training: the starting expert has no z for {missing[0]}")
    expert = {name: init[name].detach().float().clone().requires_grad_(True) for name in svd}
    # reinforce: batch_size // samples prompts with `samples` answers each, as many rows as ce's step
    prompts_per_step = batch_size if method == "ce" else max(1, batch_size // samples)
    stream = batch_stream(tokenizer, rows, batch_size=prompts_per_step, seed=seed, encoded=encoded)
    rewards: list[float] = []

    def loss_at(step: int) -> Tensor:
        if method == "ce":
            return ce_loss(model, svd, expert, max_mult, next(stream))
        loss, mean_reward = reinforce_loss(model, tokenizer, svd, expert, max_mult, next(stream), samples=samples,
                                           max_new_tokens=max_new_tokens, temperature=temperature,
                                           kl_coef=kl_coef, seed=seed * 100_003 + step)
        rewards.append(mean_reward)
        return loss

    with frozen(model):
        was_training = model.training
        model.eval()
        losses = optimize(list(expert.values()), loss_at, steps=steps, lr=lr, warmup_steps=warmup_steps,
                          grad_clip=grad_clip, desc=desc)
        model.train(was_training)
    return {name: z.detach() for name, z in expert.items()}, (losses if method == "ce" else rewards)


def train_lora(model, tokenizer, rows: Sequence[dict], *, rank: int, alpha: float, steps: int, lr: float,
               batch_size: int, grad_clip: float, warmup_steps: int, seed: int, desc: str = "lora"):
    """A rank-``rank`` ``peft`` LoRA on the SVF matrices, trained on the answer loss; returns the
    merged copy of the model and the adapter's trainable parameter count."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # peft draws A at random
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                                                                 target_modules=list(ADAPTED), bias="none"))
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    stream = batch_stream(tokenizer, rows, batch_size=batch_size, seed=seed)
    peft_model.eval()  # no dropout anywhere; eval keeps the forward identical to inference
    optimize(trainable, lambda step: peft_model(**next(stream)).loss, steps=steps, lr=lr,
             warmup_steps=warmup_steps, grad_clip=grad_clip, desc=desc)
    n_params = sum(p.numel() for p in trainable)
    return peft_model.merge_and_unload().eval(), n_params


def train_full(model, tokenizer, rows: Sequence[dict], *, steps: int, lr: float, batch_size: int, grad_clip: float,
               warmup_steps: int, seed: int, desc: str = "full-ft"):
    """A full fine-tune of a copy of the model (every parameter); returns it and its parameter count."""
    tuned = copy.deepcopy(model).eval()
    params = [p for p in tuned.parameters()]
    for p in params:
        p.requires_grad_(True)
    stream = batch_stream(tokenizer, rows, batch_size=batch_size, seed=seed)
    optimize(params, lambda step: tuned(**next(stream)).loss, steps=steps, lr=lr, warmup_steps=warmup_steps,
             grad_clip=grad_clip, desc=desc)
    return tuned.eval(), sum(p.numel() for p in params)
