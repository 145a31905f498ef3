"""Batched greedy generation for exact-match evaluation."""

from __future__ import annotations

from typing import Sequence

import torch


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 256) -> list[str]:
    """Greedy-decode an answer for each prompt (left-padded batches, stop at ``<eos>``).

    Returns the generated text after the prompt, special tokens removed.
    """
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        out += tokenizer.batch_decode(new, skip_special_tokens=True)
    model.train(was_training)
    return out


def chat_prompt(tokenizer, prompt: str) -> str:
    """Wrap ``prompt`` in the tokenizer's chat template when it has one (instruct models)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return prompt


def stream_generate(model, tokenizer, prompt: str, *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0):
    """Yield decoded text pieces as tokens are generated (greedy, or sampled at ``temperature``)."""
    import threading

    from transformers import TextIteratorStreamer

    text = chat_prompt(tokenizer, prompt)
    has_template = text != prompt
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=not has_template)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    torch.manual_seed(seed)
    kwargs = dict(
        **enc,
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_p=None, top_k=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        streamer=streamer,
    )
    worker = threading.Thread(target=lambda: torch.no_grad()(model.generate)(**kwargs))
    worker.start()
    yield from streamer
    worker.join()
