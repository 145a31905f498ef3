"""HumanEval scoring, the pass@k estimator, completion handling and the stdlib code perplexity."""

from __future__ import annotations

import json
import math
import string
from fractions import Fraction

import pytest
import torch

from forgelib.data.tokenizer import build_char_tokenizer
from forgelib.errors import ForgeError
from forgelib.eval.codeppl import code_perplexity, stdlib_files
from forgelib.eval.humaneval import (
    check_program,
    generate_samples,
    load_problems,
    load_samples,
    score_samples,
    truncate_completion,
)
from forgelib.eval.passk import mean_pass_at_k, pass_at_k
from forgelib.eval.sandbox import SandboxConfig
from forgelib.models.build import build_llama, llama_config

QUICK = SandboxConfig(timeout_s=2.0, cpu_s=2, memory_mb=256, max_procs=6)


@pytest.fixture(scope="module")
def problems():
    return load_problems()


@pytest.fixture(scope="module")
def tiny():
    tokenizer = build_char_tokenizer(string.printable)
    config = llama_config(vocab_size=len(tokenizer), hidden_size=16, num_layers=1, num_heads=2, max_position_embeddings=64)
    return build_llama(config, seed=0), tokenizer


# pass@k ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, c, k, expected", [
    (5, 2, 1, 2 / 5),           # c/n
    (5, 2, 2, 1 - 3 / 10),      # 1 - C(3,2)/C(5,2)
    (5, 2, 4, 1.0),             # n - c < k: every 4-subset holds a correct sample
    (10, 0, 3, 0.0),
    (10, 10, 10, 1.0),
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_product_form_matches_exact_binomials_for_large_n():
    exact = 1 - Fraction(math.comb(187, 100), math.comb(200, 100))
    assert pass_at_k(200, 13, 100) == pytest.approx(float(exact), rel=1e-12)


def test_mean_pass_at_k_averages_over_problems():
    assert mean_pass_at_k([[True, False], [False, False]], 1) == pytest.approx(0.25)
    assert mean_pass_at_k([[True, False], [False, False]], 2) == pytest.approx(0.5)


@pytest.mark.parametrize("n, c, k", [(3, 4, 1), (3, 1, 0), (3, 1, 4), (3, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ForgeError, match="pass@k"):
        pass_at_k(n, c, k)


# problems, programs, completions --------------------------------------------------------------


def test_all_164_problems_load_from_the_package(problems):
    assert len(problems) == 164
    assert list(problems)[:2] == ["HumanEval/0", "HumanEval/1"]
    assert set(problems["HumanEval/0"]) >= {"prompt", "entry_point", "test", "canonical_solution"}


def test_check_program_is_prompt_completion_test_and_check(problems):
    problem = problems["HumanEval/2"]
    program = check_program(problem, "    return 0\n")
    assert program.startswith(problem["prompt"] + "    return 0\n")
    assert program.rstrip().endswith("check(truncate_number)")
    assert problem["test"] in program


@pytest.mark.parametrize("text, expected", [
    ("\n    return x\n\ndef other():\n    pass", "\n    return x\n"),
    ("\n    return x\n\nif __name__ == '__main__':\n    f()", "\n    return x\n"),
    ("\n    return x\nprint(f(1))\n# test\n", "\n    return x"),
    ("\n    # keep indented comments\n    return x\n", "\n    # keep indented comments\n    return x\n"),
    ("\n    return x\n```\nExplanation", "\n    return x"),
    ("\n    return x\nclass A:\n", "\n    return x"),
])
def test_truncate_completion_cuts_at_the_first_top_level_stop(text, expected):
    assert truncate_completion(text) == expected


# scoring --------------------------------------------------------------------------------------


def test_canonical_solutions_pass_wrong_and_hostile_completions_fail(problems, tmp_path):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep")
    canonical = lambda task: problems[task]["canonical_solution"]  # noqa: E731
    samples = [
        {"task_id": "HumanEval/0", "completion": canonical("HumanEval/0")},
        {"task_id": "HumanEval/2", "completion": "    return number\n"},                      # wrong
        {"task_id": "HumanEval/2", "completion": canonical("HumanEval/2")},
        {"task_id": "HumanEval/0", "completion": f"    import os\n    os.remove({str(sentinel)!r})\n"
                                                 + canonical("HumanEval/0")},                  # hostile
        {"task_id": "HumanEval/4", "completion": canonical("HumanEval/4")},
        {"task_id": "HumanEval/4", "completion": "    while True:\n        pass\n"},             # endless
    ]
    report = score_samples(samples, k=(1, 2, 10), sandbox=QUICK, workers=2)
    assert report["results"] == {"HumanEval/0": [True, False], "HumanEval/2": [False, True], "HumanEval/4": [True, False]}
    assert report["n_samples"] == 6
    assert report["pass@1"] == pytest.approx(0.5)
    assert report["pass@2"] == pytest.approx(1.0)
    assert "pass@10" not in report  # only 2 samples per task
    assert sentinel.read_text() == "keep"
    json.dumps(report)  # the CLI prints it as one JSON object


def test_score_samples_rejects_malformed_samples(problems):
    with pytest.raises(ForgeError, match="unknown task_id"):
        score_samples([{"task_id": "HumanEval/999", "completion": ""}], problems=problems)
    with pytest.raises(ForgeError, match="sample 0"):
        score_samples([{"task_id": "HumanEval/0"}], problems=problems)
    with pytest.raises(ForgeError, match="no samples"):
        score_samples([], problems=problems)
    with pytest.raises(ForgeError, match="k must be >= 1"):
        score_samples([{"task_id": "HumanEval/0", "completion": ""}], k=(0, 1), problems=problems)


def test_load_samples_reads_human_eval_jsonl(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"task_id": "HumanEval/0", "completion": "    return 1\\n"}\n\n{"task_id": "HumanEval/1", "completion": ""}\n')
    assert load_samples(path) == [{"task_id": "HumanEval/0", "completion": "    return 1\n"},
                                  {"task_id": "HumanEval/1", "completion": ""}]
    path.write_text('{"task_id": "HumanEval/0"\n')
    with pytest.raises(ForgeError, match="samples.jsonl:1"):
        load_samples(path)


# generation -----------------------------------------------------------------------------------


def test_generate_samples_shape_order_and_seeded_sampling(tiny, problems):
    model, tokenizer = tiny
    greedy = generate_samples(model, tokenizer, problems, limit=2, max_new_tokens=6)
    assert [s["task_id"] for s in greedy] == ["HumanEval/0", "HumanEval/1"]
    assert all(isinstance(s["completion"], str) and truncate_completion(s["completion"]) == s["completion"] for s in greedy)
    first = generate_samples(model, tokenizer, problems, limit=1, n_samples=3, temperature=1.0, max_new_tokens=6, seed=3)
    again = generate_samples(model, tokenizer, problems, limit=1, n_samples=3, temperature=1.0, max_new_tokens=6, seed=3)
    assert [s["task_id"] for s in first] == ["HumanEval/0"] * 3
    assert first == again
    with pytest.raises(ForgeError, match="temperature"):
        generate_samples(model, tokenizer, problems, limit=1, n_samples=2, temperature=0.0)


# code perplexity ------------------------------------------------------------------------------


def test_uniform_model_has_perplexity_equal_to_vocab_size(tiny):
    model, tokenizer = tiny
    uniform = build_llama(model.config, seed=0)
    with torch.no_grad():
        uniform.lm_head.weight.zero_()  # logits 0 everywhere: p = 1/V for every token
    report = code_perplexity(uniform, tokenizer, max_tokens=300, seq_len=64, seed=0)
    assert report["perplexity"] == pytest.approx(len(tokenizer), rel=1e-5)
    assert report["n_tokens"] == 300
    assert len(report["files"]) == len(set(report["files"])) >= 300 // 63


def test_code_perplexity_is_seeded_and_reads_real_stdlib_files(tiny):
    model, tokenizer = tiny
    root, files = stdlib_files()
    a = code_perplexity(model, tokenizer, max_tokens=200, seq_len=32, seed=1)
    b = code_perplexity(model, tokenizer, max_tokens=200, seq_len=32, seed=1)
    c = code_perplexity(model, tokenizer, max_tokens=200, seq_len=32, seed=2)
    assert a == b
    assert a["files"] != c["files"]
    assert set(a["files"]) <= set(files) and all((root / f).is_file() for f in a["files"])
    assert not any("site-packages" in f for f in files)
    assert 1 < a["perplexity"] < 10 * len(tokenizer)


def test_code_perplexity_rejects_a_window_longer_than_the_context(tiny):
    model, tokenizer = tiny
    with pytest.raises(ForgeError, match="context"):
        code_perplexity(model, tokenizer, max_tokens=100, seq_len=65, seed=0)


# the `forge eval` entry points ----------------------------------------------------------------


def test_forge_eval_codeppl_is_the_library_function_on_the_loaded_model(tiny_trained):
    from typer.testing import CliRunner

    from forgelib.cli import app
    from forgelib.models.hf import load_model

    result = CliRunner().invoke(app, ["eval", str(tiny_trained[0]), "--benchmark", "codeppl", "--max-tokens", "120",
                                      "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    model, tokenizer = load_model(tiny_trained[0])
    context = model.config.max_position_embeddings  # 32: the default window is min(512, context)
    assert report == code_perplexity(model, tokenizer, max_tokens=120, seq_len=context, seed=3)
    assert report["n_tokens"] == 120


def test_forge_eval_scores_a_sample_file_and_refuses_a_model_with_it(problems, tmp_path):
    from typer.testing import CliRunner

    from forgelib.cli import app

    first, second = list(problems.values())[:2]
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(json.dumps(s) for s in [
        {"task_id": first["task_id"], "completion": first["canonical_solution"]},
        {"task_id": second["task_id"], "completion": "    return None\n"}]) + "\n")
    result = CliRunner().invoke(app, ["eval", "--benchmark", "humaneval", "--samples", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pass@1"] == pytest.approx(0.5) and report["n_samples"] == 2
    both = CliRunner().invoke(app, ["eval", "--benchmark", "humaneval", "--samples", str(path), "--model-path", "x"])
    assert both.exit_code == 2 and "do not also pass a model" in both.output
    bad_k = CliRunner().invoke(app, ["eval", "--benchmark", "humaneval", "--samples", str(path), "--k", "0"])
    assert bad_k.exit_code == 2 and "--k" in bad_k.output
