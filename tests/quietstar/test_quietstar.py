"""Quiet-STaR: the mixing head starts as the base model, the reward and baseline match hand
computations, training lowers the loss, the thinking model round-trips through disk and hides
its thoughts, the serial task is correct arithmetic, and the stage writes the issue's contract."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
import yaml

from forgelib.configtools import from_dict
from forgelib.data.batching import IGNORE, encode_rows
from forgelib.data.tasks import generate, get_task, load_tasks
from forgelib.data.tasks.serial import digits
from forgelib.errors import ForgeError
from forgelib.eval.evaluate import evaluate_model
from forgelib.eval.generate import greedy_answers
from forgelib.models.hf import load_model
from forgelib.quietstar import arms
from forgelib.config import load_section
from forgelib.quietstar.config import QuietStarConfig
from forgelib.quietstar.decoding import left_pad, right_pad
from forgelib.quietstar.model import END, HEAD_FILE, SETTINGS_FILE, START, ThinkingModel, is_thinking
from forgelib.quietstar.objective import mix_logits, reinforce_advantage, reinforce_loss, thought_reward, token_nll
from forgelib.quietstar.run import ARMS, decide, run_quietstar
from forgelib.quietstar.train import encode_paused, train_thinking

SMALL = dict(seeds=2, steps=3, batch_size=4, thought_tokens=2, n_train=32, n_val=8, n_test=8, eval_batch_size=64)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def thinking(model_dir, thought_tokens: int = 3) -> ThinkingModel:
    lm, tok = load_model(model_dir)
    return ThinkingModel.from_base(lm, tok, thought_tokens=thought_tokens, seed=0)


def batch_of(tok, rows):
    prompts = [tok(r["prompt"])["input_ids"] for r in rows]
    answers = [tok(r["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in rows]
    return (*left_pad(prompts, tok.pad_token_id), *right_pad(answers, tok.pad_token_id))


def test_mixing_head_at_init_reproduces_the_base_model(tiny_trained, tiny_data):
    rows = [*generate("copy", 1, 6, seed=1), *generate("reverse", 2, 6, seed=1)]  # prompts of several lengths
    plain, tok = load_model(tiny_trained[0])
    model = thinking(tiny_trained[0])
    p_ids, p_mask, a_ids, a_mask = batch_of(model.tokenizer, rows)
    thoughts = model.sample_thoughts(p_ids.repeat_interleave(2, 0), p_mask.repeat_interleave(2, 0), mode="random",
                                     generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.forward_answers(p_ids, p_mask, thoughts, a_ids, a_mask)
    assert torch.equal(out["weight"], torch.zeros_like(out["weight"]))
    vocab = len(tok)
    worst = 0.0
    for i, row in enumerate(rows):  # the plain model on the unpadded row, as it was trained
        ids = tok(row["prompt"])["input_ids"] + tok(row["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            logits = plain(input_ids=torch.tensor([ids])).logits[0]
        n_prompt, n_answer = len(tok(row["prompt"])["input_ids"]), int(a_mask[i].sum())
        expected = logits[n_prompt - 1 : n_prompt - 1 + n_answer]
        for j in (2 * i, 2 * i + 1):  # both thoughts of the row
            worst = max(worst, (out["mixed_logits"][j, :n_answer, :vocab] - expected).abs().max().item())
    assert worst < 1e-5
    prompts = [r["prompt"] for r in rows]
    assert model.answers(prompts, max_new_tokens=8) == greedy_answers(plain, tok, prompts, max_new_tokens=8)


def test_reward_is_the_mixed_log_likelihood_gain_over_the_lookahead():
    base = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]])  # (1, A=3, V=3)
    thought = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0]]])
    weight = torch.tensor([[[0.5], [0.25], [1.0]]])
    targets, mask = torch.tensor([[0, 1, 2]]), torch.ones(1, 3)
    mixed = mix_logits(base, thought, weight)
    assert torch.allclose(mixed[0, 1], torch.tensor([0.0, 1.5, 0.0]))
    reward = thought_reward(token_nll(base, targets, mask), token_nll(mixed, targets, mask), mask, lookahead=2)

    def log_softmax(logits, k):
        return logits[k] - math.log(sum(math.exp(v) for v in logits))

    # token 0: mixed logits (1, 0, 0) vs base (2, 0, 0); token 1: (0, 1.5, 0) vs (0, 1, 0); token 2 is past the lookahead
    by_hand = (log_softmax([1, 0, 0], 0) - log_softmax([2, 0, 0], 0)) + (log_softmax([0, 1.5, 0], 1) - log_softmax([0, 1, 0], 1))
    assert reward.item() == pytest.approx(by_hand, abs=1e-6)
    masked = thought_reward(token_nll(base, targets, mask), token_nll(mixed, targets, mask), torch.tensor([[1.0, 0.0, 0.0]]), 2)
    assert masked.item() == pytest.approx(log_softmax([1, 0, 0], 0) - log_softmax([2, 0, 0], 0), abs=1e-6)


def test_baseline_is_the_mean_reward_of_the_position_thoughts():
    reward = torch.tensor([1.0, 3.0, 0.0, 6.0])
    assert torch.equal(reinforce_advantage(reward, 2), torch.tensor([-1.0, 1.0, -3.0, 3.0]))
    assert torch.equal(reinforce_advantage(reward, 4), torch.tensor([-1.5, 0.5, -2.5, 3.5]))
    logp = torch.tensor([-1.0, -2.0, -0.5, -4.0], requires_grad=True)
    loss = reinforce_loss(reinforce_advantage(reward, 2), logp)
    assert loss.item() == pytest.approx(-(1.0 - 2.0 + 1.5 - 12.0) / 4)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([1.0, -1.0, 3.0, -3.0]) / 4)  # raises the better thought


def test_training_steps_lower_the_loss(tiny_trained):
    model = thinking(tiny_trained[0], thought_tokens=2)
    rows = generate("long_add", 1, 200, seed=0)
    cfg = QuietStarConfig(steps=40, batch_size=16, lr=0.01, warmup_steps=5, thought_tokens=2)
    history = train_thinking(model, encode_rows(model.tokenizer, rows), cfg, seed=0, log_every=5)
    first, last = history[0], history[-1]
    assert last["mixed_nll"] <= 0.45 * first["mixed_nll"], (first, last)  # measured: 5.9 -> 1.8
    assert last["loss"] <= 0.45 * first["loss"]
    assert abs(last["mix_weight"]) > 1e-3  # the mixing head left its zero start


def test_thinking_model_round_trips_and_hides_its_thoughts(tiny_trained, tiny_data, tmp_path):
    model = thinking(tiny_trained[0], thought_tokens=3)
    rows = generate("copy", 1, 64, seed=2)
    train_thinking(model, encode_rows(model.tokenizer, rows), QuietStarConfig(steps=4, batch_size=8, thought_tokens=3), seed=0)
    out = model.save(tmp_path / "thinker", {"name": "t"})
    assert is_thinking(out) and not is_thinking(tiny_trained[0])
    assert json.loads((out / SETTINGS_FILE).read_text())["thought_tokens"] == 3
    loaded = ThinkingModel.load(out)
    assert loaded.tokenizer.convert_tokens_to_ids([START, END]) == [model.start_id, model.end_id]
    prompts = [r["prompt"] for r in generate("reverse", 2, 20, seed=3)]
    pairs = model.answers(prompts, max_new_tokens=8, return_thoughts=True)
    assert loaded.answers(prompts, max_new_tokens=8, return_thoughts=True) == pairs
    assert model.answers(prompts, max_new_tokens=8) == [answer for answer, _ in pairs]
    for answer, thought in pairs:
        assert len(thought) == 3 and START not in answer and END not in answer and "<" not in answer + thought
    random_pairs = model.answers(prompts, max_new_tokens=8, return_thoughts=True, thoughts="random", seed=1)
    assert [t for _, t in random_pairs] != [t for _, t in pairs]
    tasks = {"copy": load_tasks(tiny_data)["copy"]}
    result = loaded.evaluate(tasks, limit=10)
    assert set(result) == set(evaluate_model(loaded.lm, loaded.tokenizer, tasks, limit=10))
    assert 0.0 <= result["mean"] <= 1.0 and result["perplexity"] > 1.0


def test_a_damaged_thinking_model_names_the_file(tiny_trained, tmp_path):
    out = thinking(tiny_trained[0]).save(tmp_path / "thinker")
    (out / HEAD_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ForgeError, match=HEAD_FILE):
        ThinkingModel.load(out)
    with pytest.raises(ForgeError, match="not a thinking model"):
        ThinkingModel.load(tiny_trained[0])


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_long_add_answers_are_correct_sums(level):
    task = get_task("long_add")
    assert task.family == "serial"
    for row in generate("long_add", level, 300, seed=5):
        x, y = row["prompt"].removesuffix("=").split("+")
        assert len(x) == len(y) == digits(level) and x[0] != "0" and y[0] != "0"
        assert int(row["answer"]) == int(x) + int(y) and task.check(row["prompt"], row["answer"])
        # <bos> prompt, a default thought (4 tokens + 2 markers), answer <eos>: within 64 positions
        assert 1 + len(row["prompt"]) + 6 + len(row["answer"]) + 1 <= 64


def test_pause_rows_put_k_fillers_before_a_supervised_answer(tiny_trained):
    _, tok = load_model(tiny_trained[0])
    ids, labels = encode_paused(tok, [{"prompt": "12+34=", "answer": "46"}], pause_id=99, k=3)[0]
    assert ids == tok("12+34=")["input_ids"] + [99, 99, 99] + tok("46", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert labels[: len(ids) - 3] == [IGNORE] * (len(ids) - 3) and labels[-3:] == ids[-3:]


@pytest.mark.parametrize("key,value", [("n_thoughts", 1), ("seeds", 1), ("lr", 0.0), ("thought_tokens", 0),
                                       ("task", "sorting"), ("level", 9), ("temperature", -1.0)])
def test_bad_params_name_the_key(key, value, tmp_path):
    with pytest.raises(ForgeError, match=rf"quietstar\.{key}"):
        from_dict(QuietStarConfig, {key: value}, "quietstar")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"quietstar": {key: value}}))
    with pytest.raises(ForgeError, match=rf"params\.yaml: quietstar\.{key}"):
        load_section("quietstar", params)
    assert QuietStarConfig(thought_tokens=5).pause_tokens() == 7


def test_replay_adds_the_headline_share_evenly_and_deterministically(tiny_data):
    cfg = QuietStarConfig(replay_fraction=0.2, n_train=40, n_val=4, n_test=4)
    suite, headline = arms.serial_suite(cfg), load_tasks(tiny_data)
    rows = arms.training_rows(cfg, suite, headline)
    assert [r["task"] for r in rows].count("long_add") == 40
    assert [r["task"] for r in rows[40:]] == ["copy"] * 5 + ["reverse"] * 5  # 40 * 0.2 / 0.8, half per task
    assert all(r in list(headline[r["task"]]["train"]) for r in rows[40:])
    assert rows == arms.training_rows(cfg, suite, headline)
    assert len(arms.training_rows(QuietStarConfig(n_train=40, n_val=4, n_test=4), suite, headline)) == 40


def test_a_task_too_long_for_the_model_is_refused(tiny_trained):
    lm, _ = load_model(tiny_trained[0])  # 32 positions
    cfg = QuietStarConfig(level=4, thought_tokens=8, n_train=4, n_val=2, n_test=2)
    with pytest.raises(ForgeError, match="quietstar.thought_tokens"):
        arms.check_fits(lm, arms.serial_suite(cfg), cfg, "tiny")


def test_smoke_run_writes_the_contract(tiny_trained, tiny_data, tmp_path):
    cfg = QuietStarConfig(enabled=True, **SMALL)
    metrics_path, out, thinking = tmp_path / "quietstar.json", tmp_path / "model", tmp_path / "thinking"
    run_quietstar(cfg, data_dir=tiny_data, input_dir=tiny_trained[0], out_dir=out, thinking_dir=thinking,
                  metrics_path=metrics_path, plots_dir=tmp_path / "plots")
    metrics = json.loads(metrics_path.read_text())
    assert {"arms", "task", "enabled_by_default"} <= set(metrics) and metrics["task"] == "long_add"
    assert set(metrics["arms"]) == set(ARMS)
    for arm in ARMS:
        scores = metrics["arms"][arm]["test_mean"]
        assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
        assert metrics["arms"][arm]["mean"] == pytest.approx(statistics.fmean(scores))
        assert metrics["arms"][arm]["std"] == pytest.approx(statistics.stdev(scores))
    assert metrics["enabled_by_default"] is decide(metrics["arms"])["enabled_by_default"]
    headline = metrics["arms"]["thoughts"]["headline"]
    assert len(headline["test_mean"]) == len(headline["test_mean_thinking"]) == 2
    assert is_thinking(thinking) and is_thinking(out) and (tmp_path / "plots" / "thoughts.tsv").is_file()
    assert (out / "model.safetensors").read_bytes() == (thinking / "model.safetensors").read_bytes()
    assert len(metrics["thought_examples"][0]["thought"]) == 2

    # Switched off, the arms are still measured (same figures: same seeds) and the input passes on unchanged.
    passthrough = tmp_path / "passthrough"
    off = run_quietstar(QuietStarConfig(**SMALL), data_dir=tiny_data, input_dir=tiny_trained[0], out_dir=passthrough,
                        thinking_dir=tmp_path / "thinking_off", metrics_path=tmp_path / "off.json", plots_dir=None)
    assert {a: off["arms"][a]["test_mean"] for a in ARMS} == {a: metrics["arms"][a]["test_mean"] for a in ARMS}
    assert is_thinking(tmp_path / "thinking_off") and not is_thinking(passthrough)
    assert (passthrough / "model.safetensors").read_bytes() == (tiny_trained[0] / "model.safetensors").read_bytes()


def test_the_bar_needs_a_gain_beyond_the_spread_and_a_random_fallback():
    arm = lambda mean, std: {"mean": mean, "std": std}  # noqa: E731
    base = {"sft": arm(0.30, 0.05), "pause": arm(0.32, 0.02)}
    assert decide({**base, "thoughts": arm(0.40, 0.01), "random_thoughts": arm(0.30, 0.01)})["enabled_by_default"]
    assert not decide({**base, "thoughts": arm(0.36, 0.01), "random_thoughts": arm(0.20, 0.01)})["enabled_by_default"]
    assert not decide({**base, "thoughts": arm(0.40, 0.01), "random_thoughts": arm(0.38, 0.01)})["enabled_by_default"]


def test_arms_in_worker_processes_give_the_serial_result(tiny_trained, tiny_data, tmp_path, monkeypatch):
    """Each (seed, arm) trains in a worker process (forgelib.runtime.worker_pool): every figure and
    curve must equal the one-worker run's; only (CPU) seconds may differ."""
    from forgelib.quietstar.run import measure_arms

    cfg = QuietStarConfig(**SMALL)
    out = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("FORGE_WORKERS", workers)
        metrics, curves = measure_arms(cfg, data_dir=tiny_data, input_dir=tiny_trained[0], model_out=tmp_path / workers)
        for arm in metrics["arms"].values():
            assert len(arm.pop("cpu_seconds")) == 2
        curves = {arm: [{k: v for k, v in row.items() if k != "seconds"} for row in rows] for arm, rows in curves.items()}
        out[workers] = (metrics, curves, (tmp_path / workers / "model.safetensors").read_bytes())
    assert out["1"][0] == out["2"][0]
    assert out["1"][1] == out["2"][1] and [row["seed"] for row in out["2"][1]["sft"]][-1] == 1
    assert out["1"][2] == out["2"][2]  # the seed-0 thinking model, byte for byte
