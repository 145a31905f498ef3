"""bench/grokfast.py's equations: the paper's one-token operands and the --digits variant."""

import pytest
import torch


def test_digit_operands_encode_the_same_equations_as_single_tokens(load_bench):
    bench = load_bench("grokfast")
    tokens, answers = bench.equations("*", 97)
    digits, digit_answers = bench.equations("*", 97, digits=True)
    assert tokens.shape == (9312, 4) and digits.shape == (9312, 6)
    assert torch.equal(answers, digit_answers)
    assert torch.equal(digits[:, 0] * 10 + digits[:, 1], tokens[:, 0])  # x
    assert torch.equal(digits[:, 3] * 10 + digits[:, 4], tokens[:, 2])  # y
    assert int(digits[:, [0, 1, 3, 4]].max()) == 9
    assert digits[:, 2].unique().tolist() == [98] and digits[:, 5].unique().tolist() == [97]
    row = digits.tolist().index([3, 0, 98, 1, 9, 97])  # the suite's example 30*19%97= -> 85
    assert int(answers[row]) == 85
    assert all(int(a) == x * y % 97 for (x, _, y, _), a in zip(tokens.tolist()[::97], answers.tolist()[::97]))


def test_digit_operands_need_two_digit_moduli_and_fit_the_decoder(load_bench):
    bench = load_bench("grokfast")
    with pytest.raises(ValueError, match="p must be <= 100"):
        bench.equations("+", 101, digits=True)
    inputs, _ = bench.equations("+", 13, digits=True)
    model = bench.Decoder(vocab=15, max_len=inputs.shape[1])
    assert model(inputs[:5]).shape == (5, 15)


def test_digit_answers_are_the_answers_digits_teacher_forced(load_bench):
    bench = load_bench("grokfast")
    inputs, answers = bench.equations("*", 97, digits=True, digit_answer=True)
    _, one_token = bench.equations("*", 97, digits=True)
    assert inputs.shape == (9312, 7) and answers.shape == (9312, 2)
    assert torch.equal(answers[:, 0] * 10 + answers[:, 1], one_token)
    assert torch.equal(inputs[:, 6], answers[:, 0])  # the input ends with the first answer digit
    row = inputs[:, :6].tolist().index([3, 0, 98, 1, 9, 97])
    assert answers[row].tolist() == [8, 5]  # 30*19 mod 97 = 85
    with pytest.raises(ValueError, match="needs --digits"):
        bench.equations("*", 97, digit_answer=True)


def test_decoder_scores_the_last_positions_as_a_full_causal_pass_would(load_bench):
    bench = load_bench("grokfast")
    torch.manual_seed(0)
    model = bench.Decoder(vocab=99, max_len=7).eval()
    inputs, answers = bench.equations("*", 97, digits=True, digit_answer=True)
    ids = inputs[:16]
    two = model(ids, answer_tokens=2)
    assert two.shape == (16, 2, 99)
    # the last position alone (the one-answer-token path, no mask) gives the same logits
    assert torch.allclose(two[:, 1], model(ids), atol=1e-5)
    # the first answer position sees only the prompt: the prompt alone gives the same logits
    assert torch.allclose(two[:, 0], model(ids[:, :6]), atol=1e-5)
    right = bench.exact_match(two, answers[:16])
    assert right.shape == (16,) and right.dtype == torch.bool
    assert bench.exact_match(torch.nn.functional.one_hot(answers[:4], 99).float(), answers[:4]).all()


@pytest.mark.parametrize("adamw", [None, 1.0])
def test_history_records_train_and_validation_and_the_loss_falls(load_bench, adamw):
    bench = load_bench("grokfast")
    history: list = []
    _, final, _ = bench.steps_to_95("ema", op="+", p=13, seed=0, max_steps=120, eval_every=20,
                                    digits=True, digit_answer=True, history=history, history_every=2,
                                    adamw_weight_decay=adamw)
    assert [r["step"] for r in history] == [40, 80, 120]
    assert set(history[0]) == {"step", "val", "train", "loss"}
    assert all(0.0 <= r["val"] <= 1.0 and 0.0 <= r["train"] <= 1.0 for r in history)
    assert history[-1]["val"] == round(final, 4)
    # 84 train equations of x+y mod 13: memorised within 120 steps, so the loss falls well below its start
    assert history[0]["loss"] > history[-1]["loss"] + 0.3
