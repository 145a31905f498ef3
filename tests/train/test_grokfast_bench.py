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
