"""Teacher-forced argmax correctness is greedy exact match; losses are per example."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from forgelib.data.batching import IGNORE, collate
from forgelib.train.batch_stats import accuracy_by_family, answer_stats

from conftest import tiny_model


def test_all_answer_tokens_argmax_correct_iff_greedy_decoding_emits_them(tokenizer):
    model = tiny_model(tokenizer, seed=1).eval()
    prompts = ["12+5=", "rev:abc=", "par:0110=", "7+3%7="]
    rows = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=5, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        generated = out[0, ids.shape[1]:].tolist()
        wrong = generated.copy()
        wrong[-1] = (wrong[-1] + 1) % len(tokenizer)
        for answer in (generated, wrong):
            full = ids[0].tolist() + answer
            rows.append((full, [IGNORE] * ids.shape[1] + answer))
    batch = collate(rows, tokenizer.pad_token_id)  # right padding, unlike generate's single prompts
    with torch.no_grad():
        stats = answer_stats(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                             batch["labels"])
    assert stats.correct.tolist() == [True, False] * len(prompts)


def test_losses_are_per_example_and_token_weighted():
    vocab = 3
    logits = torch.zeros(2, 3, vocab)  # uniform: every scored token costs log(3)
    labels = torch.tensor([[IGNORE, 1, 2], [IGNORE, IGNORE, 0]])
    stats = answer_stats(logits, labels)
    assert_close(stats.example_loss, torch.full((2,), float(torch.log(torch.tensor(3.0)))))
    assert_close(stats.token_loss, torch.log(torch.tensor(3.0)))
    assert stats.correct.tolist() == [False, True]  # uniform logits: argmax is token 0
    logits[0, 0, 1] = 1.0
    logits[0, 1, 2] = 1.0
    logits[1, 1, 0] = 1.0
    assert answer_stats(logits, labels).correct.tolist() == [True, True]
    logits[1, 1, 2] = 2.0
    assert answer_stats(logits, labels).correct.tolist() == [True, False]


def test_family_accuracy_averages_tasks():
    rows = [{"task": "a", "family": "f"}, {"task": "a", "family": "f"}, {"task": "b", "family": "f"},
            {"task": "c", "family": "g"}]
    per_task, families = accuracy_by_family(rows, torch.tensor([True, False, True, False]))
    assert per_task == {"a": 0.5, "b": 1.0, "c": 0.0}
    assert families == {"f": 0.75, "g": 0.0}
