"""Evaluation: local `evaluate` metric modules, the contract JSON, and forced == greedy exact match."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from forgelib.cli import app
from forgelib.data.tasks import load_tasks
from forgelib.eval import evaluate as evaluate_module
from forgelib.eval.evaluate import _row_batches, evaluate_model, forced_exact_match, load_metric, score_rows
from forgelib.eval.generate import greedy_answers
from forgelib.models.hf import load_model


def test_exact_match_module_by_path():
    metric = load_metric("exact_match")
    out = metric.compute(predictions=["12", "ab ", "x"], references=["12", "ab", "y"])
    assert out["exact_match"] == pytest.approx(2 / 3)
    assert out["n"] == 3


def test_perplexity_module_is_token_weighted():
    out = load_metric("token_perplexity").compute(nll=[2.0, 4.0], n_tokens=[1, 3])
    assert out["perplexity"] == pytest.approx(math.exp(6.0 / 4))


def test_row_nll_matches_manual_log_softmax(tiny_trained):
    model, tok = load_model(tiny_trained[0])
    row = {"prompt": "cpy:ab=", "answer": "ab"}
    scores = score_rows(model, tok, [row])
    nll, count = scores.nll.tolist(), scores.n_tokens.tolist()
    ids = tok("cpy:ab=")["input_ids"] + tok("ab", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    prompt_len = len(tok("cpy:ab=")["input_ids"])
    manual = -sum(logp[t - 1, ids[t]].item() for t in range(prompt_len, len(ids)))
    assert count == [3]
    assert nll[0] == pytest.approx(manual, rel=1e-5)


def test_row_batches_keep_order_and_the_logits_budget(monkeypatch):
    rows = [([1] * n, [1] * n) for n in (3, 10, 4, 4, 20, 2, 2, 2)]
    monkeypatch.setattr(evaluate_module, "LOGITS_BUDGET", 4 * 10 * 50 * 2)  # two rows of width 10 at vocab 50
    chunks = _row_batches(rows, batch_size=3, vocab=50)
    assert [row for chunk in chunks for row in chunk] == rows  # every row, in order
    assert [len(c) for c in chunks] == [2, 2, 1, 3]  # 20 tokens alone exceed the budget: a batch of its own
    for chunk in chunks:
        assert len(chunk) <= 3
        assert len(chunk) == 1 or len(chunk) * max(len(r[0]) for r in chunk) * 50 * 4 <= 4 * 10 * 50 * 2


def test_scoring_under_a_small_logits_budget_gives_the_same_results(tiny_trained, tiny_data, monkeypatch):
    model, tokenizer = load_model(tiny_trained[0])
    rows = list(load_tasks(tiny_data)["reverse"]["test"])
    full = score_rows(model, tokenizer, rows)
    monkeypatch.setattr(evaluate_module, "LOGITS_BUDGET", 4 * 16 * len(tokenizer) * 3)  # ~3 rows per pass
    small = score_rows(model, tokenizer, rows)
    assert torch.equal(small.n_tokens, full.n_tokens) and torch.equal(small.correct, full.correct)
    assert (small.nll - full.nll).abs().max() < 1e-4


def test_sft_loss_decreases(tiny_trained):
    history = tiny_trained[1]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]


def test_forced_exact_match_equals_greedy_generation(tiny_trained, tiny_data):
    model, tok = load_model(tiny_trained[0])
    rows = [r for t in load_tasks(tiny_data).values() for r in t["test"]]
    forced = forced_exact_match(model, tok, rows)
    greedy = [a == r["answer"] for a, r in zip(greedy_answers(model, tok, [r["prompt"] for r in rows], max_new_tokens=8), rows)]
    assert forced == greedy
    assert 0 < sum(forced) < len(forced), "the fixture model should be partly right, so the check is not vacuous"


def test_eval_cli_contract(tiny_trained, tiny_data):
    result = CliRunner().invoke(app, ["eval", str(tiny_trained[0]), "--data", str(tiny_data), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) >= {"tasks", "families", "mean"}
    assert set(out["tasks"]) == {"copy", "reverse"}
    assert all(set(v) == {"exact_match", "n"} and v["n"] == 40 for v in out["tasks"].values())
    assert out["mean"] == pytest.approx(sum(out["families"].values()) / len(out["families"]))
    direct = evaluate_model(*load_model(tiny_trained[0]), load_tasks(tiny_data))
    assert direct["mean"] == pytest.approx(out["mean"])


def test_missing_model_dir_exits_2(tmp_path, tiny_data):
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "nope"), "--data", str(tiny_data)])
    assert result.exit_code == 2
    assert "model directory not found" in result.output


def test_tokenizer_that_does_not_fit_exits_2(tiny_trained, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    bad = tmp_path / "bad"
    shutil.copytree(tiny_trained[0], bad)
    tok = AutoTokenizer.from_pretrained(bad)
    tok.add_tokens([f"<extra{i}>" for i in range(64)])
    tok.save_pretrained(bad)
    result = CliRunner().invoke(app, ["test", "--model-path", str(bad), "--prompt", "cpy:ab="])
    assert result.exit_code == 2
    assert "tokenizer has" in result.output and "embedding has" in result.output


def test_generation_cli_streams(tiny_trained):
    result = CliRunner().invoke(app, ["test", "--model-path", str(tiny_trained[0]), "--prompt", "cpy:ab=", "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() != ""
