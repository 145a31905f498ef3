"""ADAS: the DSL's schema, its interpreter (answers and model calls, hand-checked on a scripted
backend), the bootstrap fitness, and the resumable search."""

import random

import pytest

from forgelib.agents import adas
from forgelib.errors import ForgeError


class Scripted:
    """A backend whose behaviour is known: greedy answers are wrong on odd items, sample j of a
    call salted s is right when s + j is even, the tool knows the answer
    only for arithmetic prompts (containing '+'), and expert 'arithmetic' makes greedy right."""

    families = ("arithmetic", "string")

    def __init__(self, truth):
        self.truth = truth
        self.generate_calls = 0
        self.tool_calls = 0

    def generate(self, prompts, *, k, temperature, expert, contexts, salt):
        self.generate_calls += 1
        out = []
        for p in prompts:
            i = int(p.split(":")[0])
            if temperature == 0:
                right = expert == "arithmetic" or i % 2 == 0
                out.append([self.truth[p] if right else "x"])
                continue
            out.append([self.truth[p] if (salt + j) % 2 == 0 else "y" for j in range(k)])
        return out

    def dispatch(self, prompts):
        return ["arithmetic" if "+" in p else "string" for p in prompts]

    def tool_answers(self, prompts):
        self.tool_calls += len(prompts)
        return [self.truth[p] if "+" in p else None for p in prompts]

    def memory_contexts(self, prompts):
        return ["" for _ in prompts]

    def well_formed(self, prompt, answer):
        return answer.isdigit()


def _items(n=8):
    prompts = [f"{i}:{i}+1=" if i < n // 2 else f"{i}:rev=" for i in range(n)]
    return prompts, {p: str(10 + i) for i, p in enumerate(prompts)}


def test_seed_designs_are_valid_and_bad_designs_are_named():
    for design in adas.SEED_DESIGNS:
        assert adas.validation_errors(design, ("arithmetic",)) == []
    bad = {"name": "x", "blocks": [{"block": "Generate", "k": 3, "temperature": 0.0}, {"block": "Eval", "code": "1"}]}
    errors = adas.validation_errors(bad)
    assert errors and "blocks/1" in errors[0]
    retry_first = {"name": "r", "blocks": [{"block": "RetryUntilValid", "n": 2, "temperature": 0.7},
                                           {"block": "Generate", "k": 1, "temperature": 0.0}]}
    assert any("needs a Verify" in e for e in adas.validation_errors(retry_first))
    greedy_k = {"name": "g", "blocks": [{"block": "Generate", "k": 3, "temperature": 0.0}]}
    assert any("k = 1" in e for e in adas.validation_errors(greedy_k))
    with pytest.raises(ForgeError, match="agents/best.json: invalid agent design"):
        adas.check_design({"blocks": []}, where="agents/best.json")
    unknown_expert = {"name": "u", "blocks": [{"block": "Route", "expert": "poetry"}, {"block": "Generate", "k": 1, "temperature": 0}]}
    assert any("unknown expert" in e for e in adas.validation_errors(unknown_expert, ("arithmetic",)))


def test_interpreter_answers_and_calls_match_hand_computation():
    prompts, truth = _items(8)
    answers = [truth[p] for p in prompts]
    direct = adas.run_design(adas.SEED_DESIGNS[0], Scripted(truth), prompts, answers)
    # greedy is right on even items only
    assert direct.accuracy == pytest.approx(0.5)
    assert direct.calls == [1] * 8

    # tool_verify: greedy, then the calculator drops wrong arithmetic answers (items 1, 3) and
    # abstains elsewhere (items 5, 7 keep their wrong "x"); the retry block is at position 2, so
    # its first attempt has salt 33 (odd: wrong), its second salt 34 (right): items 1 and 3 are
    # right after two retries. Every item pays one call for the model's calculator call.
    outcome = adas.run_design(adas.SEED_DESIGNS[2], Scripted(truth), prompts, answers)
    assert outcome.correct == [True, True, True, True, True, False, True, False]
    assert outcome.calls == [2, 4, 2, 4, 2, 2, 2, 2]

    # Route auto + greedy: arithmetic items get the expert and become right; one call for dispatch.
    routed = {"name": "route", "blocks": [{"block": "Route", "expert": "auto"},
                                          {"block": "Generate", "k": 1, "temperature": 0.0}]}
    outcome = adas.run_design(routed, Scripted(truth), prompts, answers)
    assert outcome.correct == [True, True, True, True, True, False, True, False]
    assert outcome.calls_per_item == 2.0

    # ToolCall then Verify(calculate): the model's call is charged once per item, not twice.
    tool = {"name": "tool", "blocks": [{"block": "ToolCall", "tool": "calculate"},
                                       {"block": "Verify", "tool": "calculate"},
                                       {"block": "Generate", "k": 1, "temperature": 0.0}]}
    backend = Scripted(truth)
    outcome = adas.run_design(tool, backend, prompts, answers)
    assert outcome.calls == [2] * 8
    assert backend.tool_calls == 8
    assert outcome.accuracy == pytest.approx(6 / 8)

    # Majority vote over [greedy, 4 samples at salt 16: right, "y", right, "y"] on an odd item:
    # ["x", right, "y", right, "y"] -> a 2-2 tie between right and "y": the first seen (right) wins.
    vote = adas.run_design(adas.SEED_DESIGNS[1], Scripted(truth), prompts, answers)
    assert vote.accuracy == 1.0
    assert vote.calls == [5] * 8


def test_bootstrap_median_and_call_penalty():
    assert adas.bootstrap_median([True] * 10) == 1.0
    assert adas.bootstrap_median([]) == 0.0
    half = adas.bootstrap_median([True, False] * 50, resamples=500)
    assert abs(half - 0.5) < 0.03
    out = adas.Outcome(["a"] * 4, [3, 3, 3, 3], [True] * 4)
    assert adas.fitness(out, call_penalty=0.01) == pytest.approx(1.0 - 0.03)


def test_search_proposes_valid_designs_and_resumes_exactly():
    prompts, truth = _items(8)
    items = [{"prompt": p, "answer": truth[p]} for p in prompts]
    settings = adas.SearchSettings(generations=4, proposals_per_generation=6, call_penalty=0.01, resamples=50)
    full = adas.search(Scripted(truth), items, settings)
    assert full["proposals"] == 24
    assert 0 < full["valid_proposals"] <= 24
    assert full["evaluations"] == len(full["archive"]) >= 4
    assert all(adas.validation_errors(adas.as_design(e), Scripted.families) == [] for e in full["archive"])

    saved = []
    adas.search(Scripted(truth), items, adas.SearchSettings(**{**settings.__dict__, "generations": 2}),
                save=lambda s: saved.append(s))
    resumed = adas.search(Scripted(truth), items, settings, state=saved[-1])
    assert [adas.canonical(e) for e in resumed["archive"]] == [adas.canonical(e) for e in full["archive"]]
    assert resumed["proposals"] == full["proposals"]

    hand, best = adas.best_designs(full["archive"])
    assert hand["seed"]
    if best is not None:
        assert not best["seed"] and best["calls_per_item"] <= hand["calls_per_item"]


def test_proposals_mutate_the_archive():
    rng = random.Random(0)
    archive = [dict(d, fitness=0.0) for d in adas.SEED_DESIGNS]
    proposals = [adas.propose(archive, rng, ("arithmetic",)) for _ in range(50)]
    seeds = {adas.canonical(d) for d in adas.SEED_DESIGNS}
    assert sum(adas.canonical(p) not in seeds for p in proposals) >= 40
