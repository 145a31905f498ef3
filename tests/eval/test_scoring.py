"""The one scoring module: answer loss, both forms of exact match, family mean and perplexity,
checked against hand-computed values, and the learning-rate schedule every loop shares."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from forgelib.data.batching import IGNORE, collate
from forgelib.data.tokenizer import build_char_tokenizer
from forgelib.eval.scoring import (
    AnswerScores,
    accuracy,
    accuracy_by_task,
    exact_match,
    family_mean,
    family_scores,
    perplexity,
    score_answers,
)
from forgelib.models.build import build_llama, llama_config
from forgelib.train.schedule import learning_rate


def test_teacher_forced_correctness_is_greedy_exact_match():
    tokenizer = build_char_tokenizer()
    config = llama_config(vocab_size=len(tokenizer), hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=64)
    model = build_llama(config, seed=1).eval()
    rows = []
    for prompt in ["12+5=", "rev:abc=", "par:0110=", "7+3%7="]:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=5, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        generated = out[0, ids.shape[1]:].tolist()
        wrong = generated.copy()
        wrong[-1] = (wrong[-1] + 1) % len(tokenizer)
        for answer in (generated, wrong):
            rows.append((ids[0].tolist() + answer, [IGNORE] * ids.shape[1] + answer))
    batch = collate(rows, tokenizer.pad_token_id)  # right padding, unlike generate's single prompts
    with torch.no_grad():
        scores = score_answers(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["labels"])
    assert scores.correct.tolist() == [True, False] * 4


def test_answer_loss_is_token_weighted_and_per_row():
    # Row 0 scores two tokens, row 1 one token. Logits at the scored positions:
    #   row 0, predicting 1 from [0, ln 3, 0]: NLL = log(1 + 3 + 1) - ln 3 = ln(5/3)
    #   row 0, predicting 2 from [0, 0, 0]:    NLL = ln 3
    #   row 1, predicting 0 from [ln 2, 0, 0]: NLL = ln(2 + 1 + 1) - ln 2 = ln 2
    logits = torch.zeros(2, 3, 3)
    logits[0, 0, 1] = math.log(3)
    logits[1, 1, 0] = math.log(2)
    labels = torch.tensor([[IGNORE, 1, 2], [IGNORE, IGNORE, 0]])
    scores = score_answers(logits, labels)
    assert scores.n_tokens.tolist() == [2, 1]
    assert_close(scores.nll, torch.tensor([math.log(5 / 3) + math.log(3), math.log(2)]))
    assert_close(scores.example_loss, torch.tensor([(math.log(5 / 3) + math.log(3)) / 2, math.log(2)]))
    assert_close(scores.loss, torch.tensor((math.log(5 / 3) + math.log(3) + math.log(2)) / 3))
    # row 0's second token (uniform logits) argmaxes to 0, not 2; row 1's answer is the argmax
    assert scores.correct.tolist() == [False, True]


def test_exact_match_on_a_batch_where_the_right_rows_are_known():
    logits = torch.zeros(3, 4, 5)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4], [IGNORE, 2, 2, 1], [IGNORE, IGNORE, IGNORE, 0]])
    logits[0, 1, 3] = logits[0, 2, 4] = 1.0  # row 0: both answer tokens right
    logits[1, 0, 2] = logits[1, 1, 2] = 1.0  # row 1: first two right, the last (1) wrong: argmax is 0
    # row 2: the single answer token 0 is the argmax of uniform logits (first index wins ties)
    assert score_answers(logits, labels).correct.tolist() == [True, False, True]
    no_answer = torch.full((1, 4), IGNORE)
    assert score_answers(torch.zeros(1, 4, 5), no_answer).correct.tolist() == [False]  # nothing to be right about
    assert exact_match(["12", " ab\n", "x"], ["12", "ab", "y"]) == [True, True, False]
    assert accuracy([True, True, False]) == pytest.approx(2 / 3) and accuracy([]) == 0.0


def test_family_mean_averages_tasks_then_families():
    per_task = accuracy_by_task(["a", "a", "b", "c", "a"], [True, False, True, False, True])
    assert per_task == {"a": pytest.approx(2 / 3), "b": 1.0, "c": 0.0}
    families = family_scores(per_task, {"a": "f", "b": "f", "c": "g"})
    assert families == {"f": pytest.approx((2 / 3 + 1.0) / 2), "g": 0.0}
    # a family with more tasks does not dominate: mean over families, not over tasks
    assert family_mean(families) == pytest.approx(((2 / 3 + 1.0) / 2 + 0.0) / 2)
    assert family_mean({}) == 0.0


def test_perplexity_is_exp_of_the_token_weighted_mean_nll():
    assert perplexity([2.0, 4.0], [1, 3]) == pytest.approx(math.exp(6.0 / 4))
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[IGNORE, IGNORE, 3, 1, 6], [IGNORE, 2, 0, IGNORE, IGNORE]])
    scores = score_answers(logits, labels)
    logp = torch.log_softmax(logits, dim=-1)
    by_hand = [-(logp[0, 1, 3] + logp[0, 2, 1] + logp[0, 3, 6]).item(), -(logp[1, 0, 2] + logp[1, 1, 0]).item()]
    assert scores.nll.tolist() == pytest.approx(by_hand, rel=1e-6)
    assert perplexity(scores.nll.tolist(), scores.n_tokens.tolist()) == pytest.approx(math.exp(sum(by_hand) / 5), rel=1e-6)


def test_concatenated_scores_keep_rows_and_weigh_tokens():
    a = score_answers(torch.zeros(1, 3, 3), torch.tensor([[IGNORE, 1, 2]]))
    b = score_answers(torch.zeros(1, 2, 3), torch.tensor([[IGNORE, 0]]))
    both = AnswerScores.cat([a, b])
    assert both.n_tokens.tolist() == [2, 1] and both.correct.tolist() == [False, True]
    assert_close(both.loss, torch.tensor(math.log(3)))
    assert AnswerScores.cat([]).nll.shape == (0,)


@pytest.mark.parametrize("schedule, step, expected", [
    ("cosine", 0, 1e-3 * 1 / 10),          # warmup: (step + 1) / warmup_steps of the peak
    ("cosine", 9, 1e-3),                   # warmup end: the peak
    ("cosine", 10, 1e-3),                  # decay starts at the peak (progress 0)
    ("cosine", 60, 1e-3 * (0.1 + 0.9 * 0.5)),  # midpoint of the decay: halfway between peak and floor
    ("cosine", 110, 1e-4),                 # end: the 10% floor
    ("cosine", 500, 1e-4),                 # and it stays there
    ("constant", 60, 1e-3),
    ("constant", 3, 4e-4),
])
def test_learning_rate_schedule(schedule, step, expected):
    assert learning_rate(step, peak=1e-3, warmup_steps=10, total_steps=110, schedule=schedule) == pytest.approx(expected)


def test_learning_rate_rejects_an_unknown_schedule():
    with pytest.raises(ValueError, match="linear"):
        learning_rate(0, peak=1.0, warmup_steps=0, total_steps=1, schedule="linear")
