"""Surprise-gated episodic memory: the store, the gate, the recall task and a small run of the arms."""

import json
import math
import random

import pytest
import torch

from forgelib.agents.memory import EpisodicMemory, SurpriseGate, answer_surprise, ngram_embedding
from forgelib.agents.memory_arms import MemoryArmsSettings, run_memory_arms
from forgelib.agents.memory_task import (FACT_CHARS, derivable_value, episodes, make_episode, model_prompt,
                                         window_chars)
from forgelib.errors import ForgeError


def test_exact_key_round_trips_with_score_one():
    memory = EpisodicMemory(4)
    memory.write("b7", "b7:3")
    assert memory.lookup("b7") == [("b7:3", pytest.approx(1.0, abs=1e-6))]
    assert len(memory) == 1 and memory.writes == 1


def test_nearest_neighbour_among_distractors():
    memory = EpisodicMemory(8)
    for key in ("c7", "x1", "b3", "q2", "b7", "k9"):
        memory.write(key, f"value of {key}")
    (best, score), second = memory.lookup("b7", k=2)
    assert best == "value of b7" and score == pytest.approx(1.0, abs=1e-6)
    # b3 ("b", "^b") and c7 ("7", "7$") each share 2 of b7's 5 grams: cosine 0.4; the older, c7, wins.
    assert second[1] == pytest.approx(0.4, abs=1e-6) and second[0] == "value of c7"
    # An unseen key: its nearest neighbour is the stored key with most characters in common.
    assert memory.lookup("x12")[0][0] == "value of x1"
    assert len(memory.lookup("b7", k=10)) == 6


def test_ngram_embedding_hand_computed_cosines():
    assert float(ngram_embedding("ab") @ ngram_embedding("ab")) == pytest.approx(1.0, abs=1e-6)
    assert float(ngram_embedding("b7") @ ngram_embedding("b3")) == pytest.approx(2 / 5, abs=1e-6)
    assert float(ngram_embedding("x1") @ ngram_embedding("q2")) == pytest.approx(0.0, abs=1e-6)


def test_caller_embeddings_are_used_by_cosine():
    memory = EpisodicMemory(4, dim=3)
    memory.write("a", "A", embedding=torch.tensor([1.0, 0.0, 0.0]))
    memory.write("b", "B", embedding=torch.tensor([0.0, 2.0, 0.0]))
    out = memory.lookup("ignored", k=2, embedding=torch.tensor([1.0, 1.0, 0.0]))
    assert [v for v, _ in out] == ["A", "B"]  # equal cosines: the older first
    assert out[0][1] == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    with pytest.raises(ForgeError, match="dim=3"):
        memory.write("c", "C", embedding=torch.ones(4))
    with pytest.raises(ForgeError, match="non-zero"):
        memory.lookup("c", embedding=torch.zeros(3))


def test_capacity_evicts_oldest_then_lowest_priority():
    fifo = EpisodicMemory(2)
    for key in ("a1", "b2", "c3"):
        assert fifo.write(key, key.upper())
    assert fifo.keys == ["b2", "c3"] and fifo.writes == 3

    ranked = EpisodicMemory(2)
    ranked.write("a1", "A", priority=2.0)
    ranked.write("b2", "B", priority=0.5)
    assert ranked.write("c3", "C", priority=1.0)  # evicts b2, the lowest
    assert not ranked.write("d4", "D", priority=0.1)  # below every stored priority: refused
    assert ranked.keys == ["a1", "c3"] and ranked.priorities == [2.0, 1.0]
    assert "D" not in ranked.values and ranked.writes == 3


def test_save_load_round_trip(tmp_path):
    memory = EpisodicMemory(3)
    for i, key in enumerate(("b7", "c7", "x1", "q2")):
        memory.write(key, f"{key}:{i}", priority=float(i))
    memory.save(tmp_path / "mem")
    loaded = EpisodicMemory.load(tmp_path / "mem")
    assert (loaded.keys, loaded.values, loaded.priorities) == (memory.keys, memory.values, memory.priorities)
    assert loaded.capacity == 3 and loaded.writes == 4 and len(loaded) == 3
    torch.testing.assert_close(loaded.embeddings, memory.embeddings, rtol=0, atol=0)
    assert loaded.lookup("c7", k=3) == memory.lookup("c7", k=3)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # nothing half-written left

    meta = json.loads((tmp_path / "mem" / "memory.json").read_text())
    meta["keys"] = meta["keys"][:-1]
    (tmp_path / "mem" / "memory.json").write_text(json.dumps(meta))
    with pytest.raises(ForgeError, match="disagree"):
        EpisodicMemory.load(tmp_path / "mem")
    with pytest.raises(ForgeError, match="not a saved EpisodicMemory"):
        EpisodicMemory.load(tmp_path / "missing")


def test_gate_writes_exactly_the_items_above_threshold_within_budget():
    losses = [0.1, 2.0, 0.5, 3.0, 2.0, 1.0]
    assert SurpriseGate(threshold=1.0).select(losses) == [1, 3, 4]  # 1.0 itself is not above
    assert SurpriseGate(threshold=1.0, budget=2).select(losses) == [1, 3]  # tie at 2.0: the earlier
    assert SurpriseGate(budget=3).select(losses) == [1, 3, 4]
    assert SurpriseGate(budget=0).select(losses) == []
    assert SurpriseGate().select(losses) == list(range(6))
    for budget in range(7):
        chosen = SurpriseGate(budget=budget).select(losses)
        assert len(chosen) == budget
        assert min((losses[i] for i in chosen), default=math.inf) >= max(
            (losses[i] for i in range(6) if i not in chosen), default=-math.inf)
    with pytest.raises(ForgeError, match="budget"):
        SurpriseGate(budget=-1)


def test_online_priority_writes_keep_the_gates_choice():
    """The arms select the top-budget losses after the stream; writing online with the losses as
    priorities must keep the same items."""
    rng = random.Random(0)
    for _ in range(20):
        losses = [rng.expovariate(1.0) for _ in range(12)]
        memory = EpisodicMemory(4)
        for i, loss in enumerate(losses):
            memory.write(f"k{i}", str(i), priority=loss)
        assert sorted(int(v) for v in memory.values) == SurpriseGate(budget=4).select(losses)


def test_answer_surprise_is_the_answer_nll(tiny_trained):
    from forgelib.models.hf import load_model

    model, tok = load_model(tiny_trained[0])
    rows = [{"prompt": "cpy:ab=", "answer": "ab"}, {"prompt": "cpy:ab=", "answer": "zz"}]
    nll = answer_surprise(model, tok, rows)
    ids = tok("cpy:ab=")["input_ids"] + tok("ab", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    start = len(tok("cpy:ab=")["input_ids"])
    manual = -sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids)))
    assert float(nll[0]) == pytest.approx(manual, rel=1e-4)
    assert float(nll[1]) > float(nll[0]) + 1.0  # the model learned to copy: a wrong answer surprises


@pytest.mark.parametrize("distance", [1, 16, 48, 128, 512])
def test_episodes_place_the_queried_fact_at_the_stated_distance(distance):
    for ep in episodes("test", distance, 25, seed=3):
        fact = ep.target_fact
        assert len(ep.stream) == 600 and ep.distance == distance
        assert ep.stream[len(ep.stream) - distance - FACT_CHARS : len(ep.stream) - distance] == fact.text
        assert ep.answer == fact.value
        assert len({f.key for f in ep.facts}) == len(ep.facts) == 12
        for f in ep.facts:
            assert ep.stream[max(f.start - 1, 0) : f.start + FACT_CHARS + 1].strip() == f.text
            assert f.exception == (f.value != f.key[1])
        # Digits occur only in facts (two per fact), so the filler never forms a fact.
        assert sum(ch.isdigit() for ch in ep.stream) == 2 * len(ep.facts)


def test_episodes_are_seeded_and_mixed():
    assert episodes("test", 48, 3, seed=0) == episodes("test", 48, 3, seed=0)
    assert episodes("test", 48, 3, seed=0) != episodes("train", 48, 3, seed=0)
    eps = episodes("validation", 128, 400, seed=1)
    target_rate = sum(ep.target_fact.exception for ep in eps) / len(eps)
    other_rate = sum(f.exception for ep in eps for f in ep.facts if f is not ep.target_fact) / (11 * len(eps))
    assert 0.43 < target_rate < 0.57 and 0.29 < other_rate < 0.38  # stated: 1/2 and 1/3
    assert derivable_value("q4") == "4"
    with pytest.raises(ForgeError, match="distance"):
        make_episode(random.Random(0), distance=600)


def test_windows_fit_the_positions_and_split_the_distances(tiny_trained):
    from forgelib.models.hf import load_tokenizer

    tok = load_tokenizer(tiny_trained[0])
    window, full = window_chars(64), window_chars(64, slot=False)
    assert (window, full) == (51, 55)
    ep = episodes("test", 48, 1, seed=0)[0]
    with_slot = model_prompt(ep.target_fact.text, ep.stream[-window:], ep.target_fact.key)
    no_slot = model_prompt(None, ep.stream[-full:], ep.target_fact.key)
    for prompt in (with_slot, no_slot):  # <bos> prompt answer <eos> uses all 64 positions
        assert len(tok(prompt)["input_ids"]) + 2 == 64
    # At distance 48 the fact's key is outside the slot window and inside full attention's.
    assert ep.target_fact.key + ":" not in ep.stream[-window:]
    assert ep.target_fact.text in ep.stream[-full:]


def test_small_arms_run_returns_the_contract(tiny_trained):
    settings = MemoryArmsSettings(distances=(3, 30), episodes_per_distance=16, n_facts=6, budget=2,
                                  stream_chars=90, finetune_steps=10, finetune_rows=64, val_rows=16,
                                  finetune_facts=8)
    out = run_memory_arms(tiny_trained[0], seeds=(0, 1), settings=settings)
    for arm in ("on", "off", "write_all", "random_writes", "std"):
        assert isinstance(out[arm], float) and 0.0 <= out[arm] <= 1.0
    assert set(out["by_distance"]) == {"3", "30"}
    for cell in out["by_distance"].values():
        assert 0.0 <= cell["on"] <= 1.0 and 0.0 <= cell["off"] <= 1.0
    # The tiny model has 32 positions: a 19-character window; 3 + 4 fits full attention's 23, 30 does not.
    assert out["window_chars"] == 19 and list(out["full_attention"]) == ["3"]
    assert out["headline_distances"] == [30]
    run = out["per_seed"][0]["by_distance"]["30"]
    assert run["target_stored"]["write_all_unbounded"] == 1.0
    # write_all keeps the last `budget` facts: the target is stored exactly when at most one
    # other fact follows it in the stream.
    eps = episodes("test", 30, 16, 0, n_facts=6, stream_chars=90)
    expected = sum(ep.target >= len(ep.facts) - 2 for ep in eps) / len(eps)
    assert run["target_stored"]["write_all"] == pytest.approx(expected)
    assert out["writes"]["on"] == out["writes"]["random_writes"] == out["writes"]["write_all_stored"] == 2


@pytest.mark.parametrize("bad, key", [({"budget": 12}, "budget"), ({"distances": (16, 600)}, "stream_chars"),
                                      ({"slot_weights": (1.0, 0.0)}, "slot_weights"), ({"min_score": 0.0}, "min_score")])
def test_bad_settings_name_the_key(bad, key):
    with pytest.raises(ForgeError, match=key):
        MemoryArmsSettings(**bad)


def test_memory_seeds_in_worker_processes_give_the_serial_result(tiny_trained, monkeypatch):
    """The seeds run in worker processes (forgelib.runtime.worker_pool); the figures must not
    depend on how many: one worker runs them one after another in this process."""
    settings = MemoryArmsSettings(distances=(30,), episodes_per_distance=8, n_facts=6, budget=2,
                                  stream_chars=90, finetune_steps=6, finetune_rows=32, val_rows=8,
                                  finetune_facts=8)
    out = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("FORGE_WORKERS", workers)
        out[workers] = run_memory_arms(tiny_trained[0], seeds=(0, 1), settings=settings)
    assert out["1"] == out["2"]
    assert [run["seed"] for run in out["2"]["per_seed"]] == [0, 1]
