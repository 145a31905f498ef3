"""ADAS, the automated design of agent systems (Hu et al. 2024), over a typed JSON DSL.

An agent design is a JSON object ``{"name": str, "blocks": [BLOCK, ...]}`` run left to right on
every item of a split. Each item carries a list of candidate answers; the first candidate left at
the end is the answer (``""`` if none). The blocks:

- ``{"block": "Route", "expert": "auto" | "none" | FAMILY}``: later Generate blocks run with that
  SVF expert of the specialize stage; ``auto`` asks the dispatcher (one model call).
- ``{"block": "MemoryLookup"}``: prepend the nearest stored example (the episodic memory) to the
  prompt of later Generate blocks (no model call).
- ``{"block": "Generate", "k": 1..8, "temperature": 0..1.5}``: add k answers from the model
  (greedy when temperature is 0, then k must be 1); k model calls.
- ``{"block": "ToolCall", "tool": "calculate"}``: the tool-trained model writes a calculator call
  for the prompt, the MCP server evaluates it, the result becomes a candidate (one model call; no
  candidate when the model writes no parseable call or the tool refuses it).
- ``{"block": "Verify", "tool": "calculate" | "format"}``: drop candidates the tool disagrees with.
  ``calculate`` compares with the calculator's result of the model's own call (one model call; it
  abstains, keeping every candidate, when there is no result); ``format`` checks the answer's shape
  for the prompt's task (digits, yes/no, letters; no model call, no knowledge of the answer).
- ``{"block": "RetryUntilValid", "n": 1..8, "temperature": 0.1..1.5}``: for items left with no
  candidate, sample one answer at a time, up to n, until one passes the last Verify (one call each).
- ``{"block": "MajorityVote"}``: keep the most frequent candidate (first seen wins ties).

The archive starts from hand-written designs (:data:`SEED_DESIGNS`: direct answer,
self-consistency, tool-verify). Each generation proposes designs by mutating and recombining
archive members, validates each proposal against :data:`DESIGN_SCHEMA` (and the rules the schema
cannot express) and scores the valid new ones. Fitness is the bootstrap median of validation
accuracy minus ``call_penalty`` per model call per item.

Deviation from the paper, and why: the paper's meta agent is a frontier LLM writing Python
``forward()`` functions, run in-process. Here the proposal operators are mutation and crossover on
the DSL (no model here can write an agent), so no generated code exists and nothing untrusted runs
in-process; the DSL is interpreted. The search is resumable: the archive is saved after every
generation (:class:`forgelib.resume.StateDir`).
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from forgelib.errors import ForgeError

BLOCKS = ("Route", "MemoryLookup", "Generate", "ToolCall", "Verify", "RetryUntilValid", "MajorityVote")
MAX_BLOCKS = 8
MAX_K = 8

DESIGN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "blocks"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 80},
        "blocks": {
            "type": "array", "minItems": 1, "maxItems": MAX_BLOCKS,
            "items": {"oneOf": [
                {"type": "object", "additionalProperties": False, "required": ["block", "expert"],
                 "properties": {"block": {"const": "Route"}, "expert": {"type": "string", "minLength": 1}}},
                {"type": "object", "additionalProperties": False, "required": ["block"],
                 "properties": {"block": {"const": "MemoryLookup"}}},
                {"type": "object", "additionalProperties": False, "required": ["block", "k", "temperature"],
                 "properties": {"block": {"const": "Generate"}, "k": {"type": "integer", "minimum": 1, "maximum": MAX_K},
                                "temperature": {"type": "number", "minimum": 0, "maximum": 1.5}}},
                {"type": "object", "additionalProperties": False, "required": ["block", "tool"],
                 "properties": {"block": {"const": "ToolCall"}, "tool": {"enum": ["calculate"]}}},
                {"type": "object", "additionalProperties": False, "required": ["block", "tool"],
                 "properties": {"block": {"const": "Verify"}, "tool": {"enum": ["calculate", "format"]}}},
                {"type": "object", "additionalProperties": False, "required": ["block", "n", "temperature"],
                 "properties": {"block": {"const": "RetryUntilValid"}, "n": {"type": "integer", "minimum": 1, "maximum": MAX_K},
                                "temperature": {"type": "number", "minimum": 0.1, "maximum": 1.5}}},
                {"type": "object", "additionalProperties": False, "required": ["block"],
                 "properties": {"block": {"const": "MajorityVote"}}},
            ]},
        },
    },
}
"""JSON schema of one design; every proposal is checked against it (``jsonschema``)."""

SEED_DESIGNS: tuple[dict, ...] = (
    {"name": "direct", "blocks": [{"block": "Generate", "k": 1, "temperature": 0.0}]},
    {"name": "self_consistency", "blocks": [{"block": "Generate", "k": 1, "temperature": 0.0},
                                            {"block": "Generate", "k": 4, "temperature": 0.7},
                                            {"block": "MajorityVote"}]},
    {"name": "tool_verify", "blocks": [{"block": "Generate", "k": 1, "temperature": 0.0},
                                       {"block": "Verify", "tool": "calculate"},
                                       {"block": "RetryUntilValid", "n": 3, "temperature": 0.7}]},
)
"""The hand-written archive the search starts from (the paper's CoT, CoT-SC and self-refine
analogues that this DSL can express)."""


class Backend(Protocol):
    """What a design runs on: the model, its experts, the tools and the memory."""

    families: Sequence[str]

    def generate(self, prompts: Sequence[str], *, k: int, temperature: float, expert: str | None,
                 contexts: Sequence[str], salt: int) -> list[list[str]]:
        """k answers per prompt. Sampling must be a function of the arguments alone (seeded from
        ``salt`` and the prompts), so a design's score does not depend on what ran before it and
        a resumed search repeats an uninterrupted one."""

    def dispatch(self, prompts: Sequence[str]) -> list[str]: ...

    def tool_answers(self, prompts: Sequence[str]) -> list[str | None]: ...

    def memory_contexts(self, prompts: Sequence[str]) -> list[str]: ...

    def well_formed(self, prompt: str, answer: str) -> bool: ...


# --------------------------------------------------------------------------------------------
# Validation


def canonical(design: Mapping) -> str:
    """The design's blocks as canonical JSON (names aside): two designs that act alike compare equal."""
    return json.dumps(design["blocks"], sort_keys=True, separators=(",", ":"))


def validation_errors(design: Any, families: Sequence[str] = ()) -> list[str]:
    """Why ``design`` is not a runnable design (empty when it is): the JSON schema, then the rules
    a schema cannot state (an answer must be produced; RetryUntilValid needs a Verify before it;
    greedy Generate has k = 1; Route names a known expert)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(DESIGN_SCHEMA)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(design)]
    if errors:
        return errors
    blocks = design["blocks"]
    kinds = [b["block"] for b in blocks]
    if not {"Generate", "ToolCall"} & set(kinds):
        errors.append("blocks: no Generate or ToolCall block, so no answer is ever produced")
    for i, b in enumerate(blocks):
        if b["block"] == "Generate" and b["temperature"] == 0 and b["k"] != 1:
            errors.append(f"blocks/{i}: greedy Generate (temperature 0) must have k = 1, got {b['k']}")
        if b["block"] == "RetryUntilValid" and "Verify" not in kinds[:i]:
            errors.append(f"blocks/{i}: RetryUntilValid needs a Verify block before it")
        if b["block"] == "Route" and families and b["expert"] not in ("auto", "none", *families):
            errors.append(f"blocks/{i}: unknown expert {b['expert']!r}; valid: auto, none, {', '.join(families)}")
    return errors


def check_design(design: Any, families: Sequence[str] = (), *, where: str = "design") -> dict:
    """``design`` if valid, else a ForgeError naming ``where`` and every problem."""
    errors = validation_errors(design, families)
    if errors:
        raise ForgeError(f"{where}: invalid agent design: " + "; ".join(errors[:5]))
    return design


# --------------------------------------------------------------------------------------------
# Interpreter


@dataclass
class Outcome:
    """A design's answers on a list of items, with the model calls each item used."""

    answers: list[str]
    calls: list[int]
    correct: list[bool] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct)) if self.correct else 0.0

    @property
    def calls_per_item(self) -> float:
        return float(np.mean(self.calls)) if self.calls else 0.0


def run_design(design: Mapping, backend: Backend, prompts: Sequence[str],
               answers: Sequence[str] | None = None) -> Outcome:
    """Run ``design`` on every prompt (block by block, batched over the items)."""
    n = len(prompts)
    experts: list[str | None] = [None] * n
    contexts = [""] * n
    candidates: list[list[str]] = [[] for _ in range(n)]
    calls = [0] * n
    last_verify: str | None = None
    tool_cache: dict[int, str | None] = {}  # the model's call for an item is made (and charged) once

    def tool_results(idx: list[int]) -> dict[int, str | None]:
        todo = [i for i in idx if i not in tool_cache]
        if todo:
            for i, result in zip(todo, backend.tool_answers([prompts[i] for i in todo])):
                tool_cache[i] = result
        return {i: tool_cache[i] for i in idx}

    def passes(i: int, answer: str, verifier: str | None) -> bool:
        if verifier is None:
            return True
        if verifier == "format":
            return backend.well_formed(prompts[i], answer)
        result = tool_cache.get(i)
        return result is None or answer == result

    def grouped_generate(idx: list[int], k: int, temperature: float, salt: int) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        groups: dict[tuple, list[int]] = {}
        for i in idx:
            groups.setdefault((experts[i], contexts[i] != ""), []).append(i)
        for (expert, _), members in groups.items():
            texts = backend.generate([prompts[i] for i in members], k=k, temperature=temperature, expert=expert,
                                     contexts=[contexts[i] for i in members], salt=salt)
            out.update(zip(members, texts))
        return out

    everyone = list(range(n))
    for position, block in enumerate(design["blocks"]):
        kind = block["block"]
        if kind == "Route":
            if block["expert"] == "auto":
                for i, family in zip(everyone, backend.dispatch(prompts)):
                    experts[i] = family
                    calls[i] += 1
            else:
                experts = [None if block["expert"] == "none" else block["expert"]] * n
        elif kind == "MemoryLookup":
            contexts = list(backend.memory_contexts(prompts))
        elif kind == "Generate":
            for i, texts in grouped_generate(everyone, block["k"], block["temperature"], 16 * position).items():
                candidates[i].extend(texts)
                calls[i] += block["k"]
        elif kind == "ToolCall":
            fresh = [i for i in everyone if i not in tool_cache]
            for i in fresh:
                calls[i] += 1
            for i, result in tool_results(everyone).items():
                if result is not None:
                    candidates[i].append(result)
        elif kind == "Verify":
            if block["tool"] == "calculate":
                for i in everyone:
                    calls[i] += i not in tool_cache
                tool_results(everyone)
            last_verify = block["tool"]
            candidates = [[c for c in cands if passes(i, c, last_verify)] for i, cands in enumerate(candidates)]
        elif kind == "RetryUntilValid":
            for attempt in range(block["n"]):
                empty = [i for i in everyone if not candidates[i]]
                if not empty:
                    break
                for i, texts in grouped_generate(empty, 1, block["temperature"], 16 * position + 1 + attempt).items():
                    calls[i] += 1
                    kept = [t for t in texts if passes(i, t, last_verify)]
                    candidates[i].extend(kept)
        elif kind == "MajorityVote":
            candidates = [[Counter(c).most_common(1)[0][0]] if c else [] for c in candidates]
        else:  # unreachable for a validated design
            raise ForgeError(f"unknown block {kind!r}")
    final = [c[0] if c else "" for c in candidates]
    correct = [a == b for a, b in zip(final, answers)] if answers is not None else []
    return Outcome(final, calls, correct)


def bootstrap_median(correct: Sequence[bool], *, resamples: int = 200, seed: int = 0) -> float:
    """Median over bootstrap resamples of the items of the mean correctness (the paper's fitness
    statistic; its reported figure is the median of a 95% bootstrap interval)."""
    values = np.asarray(correct, dtype=float)
    if values.size == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, values.size, size=(resamples, values.size))
    return float(np.median(values[draws].mean(axis=1)))


def fitness(outcome: Outcome, *, call_penalty: float, resamples: int = 200, seed: int = 0) -> float:
    return bootstrap_median(outcome.correct, resamples=resamples, seed=seed) - call_penalty * outcome.calls_per_item


# --------------------------------------------------------------------------------------------
# Proposal operators (the meta agent's role)


def _random_block(rng: random.Random, families: Sequence[str]) -> dict:
    kind = rng.choice(BLOCKS)
    if kind == "Route":
        return {"block": "Route", "expert": rng.choice(["auto", "none", *families])}
    if kind == "Generate":
        temperature = rng.choice([0.0, 0.3, 0.7, 1.0])
        return {"block": "Generate", "k": 1 if temperature == 0 else rng.randint(1, 5), "temperature": temperature}
    if kind == "ToolCall":
        return {"block": "ToolCall", "tool": "calculate"}
    if kind == "Verify":
        return {"block": "Verify", "tool": rng.choice(["calculate", "format"])}
    if kind == "RetryUntilValid":
        return {"block": "RetryUntilValid", "n": rng.randint(1, 4), "temperature": rng.choice([0.3, 0.7, 1.0])}
    return {"block": kind}


def _tweak(block: dict, rng: random.Random) -> dict:
    block = dict(block)
    if "k" in block:
        block["k"] = max(1, min(MAX_K, block["k"] + rng.choice([-2, -1, 1, 2])))
    if "n" in block:
        block["n"] = max(1, min(MAX_K, block["n"] + rng.choice([-1, 1])))
    if "temperature" in block:
        block["temperature"] = round(max(0.0, min(1.5, block["temperature"] + rng.choice([-0.3, 0.3]))), 2)
    return block


def propose(archive: Sequence[Mapping], rng: random.Random, families: Sequence[str]) -> dict:
    """One new design from the archive: a mutation (insert, delete, replace, swap or retune a
    block) of a parent, or a crossover (a prefix of one parent and a suffix of another). Parents
    are picked by a tournament of 2 on fitness. The result is NOT validated here."""

    def parent() -> dict:
        a, b = rng.sample(list(archive), 2) if len(archive) > 1 else (archive[0], archive[0])
        return a if a.get("fitness", 0.0) >= b.get("fitness", 0.0) else b

    first = parent()
    blocks = copy.deepcopy(first["blocks"])
    op = rng.choice(["insert", "delete", "replace", "swap", "tweak", "crossover"])
    if op == "crossover":
        other = copy.deepcopy(parent()["blocks"])
        blocks = blocks[: rng.randint(0, len(blocks))] + other[rng.randint(0, len(other)):]
    elif op == "insert" or not blocks:
        blocks.insert(rng.randint(0, len(blocks)), _random_block(rng, families))
    elif op == "delete":
        blocks.pop(rng.randrange(len(blocks)))
    elif op == "replace":
        blocks[rng.randrange(len(blocks))] = _random_block(rng, families)
    elif op == "swap" and len(blocks) > 1:
        i, j = rng.sample(range(len(blocks)), 2)
        blocks[i], blocks[j] = blocks[j], blocks[i]
    else:
        i = rng.randrange(len(blocks))
        blocks[i] = _tweak(blocks[i], rng)
    return {"name": f"{op}<{first['name']}", "blocks": blocks}


# --------------------------------------------------------------------------------------------
# Search


@dataclass
class SearchSettings:
    generations: int = 6
    proposals_per_generation: int = 8
    call_penalty: float = 0.005
    resamples: int = 200
    seed: int = 0


def evaluate_entry(design: Mapping, backend: Backend, items: Sequence[Mapping], settings: SearchSettings) -> dict:
    outcome = run_design(design, backend, [r["prompt"] for r in items], [r["answer"] for r in items])
    return {
        "name": design["name"], "blocks": copy.deepcopy(list(design["blocks"])),
        "validation": outcome.accuracy,
        "validation_bootstrap_median": bootstrap_median(outcome.correct, resamples=settings.resamples, seed=settings.seed),
        "calls_per_item": outcome.calls_per_item,
        "fitness": fitness(outcome, call_penalty=settings.call_penalty, resamples=settings.resamples, seed=settings.seed),
    }


def search(backend: Backend, items: Sequence[Mapping], settings: SearchSettings, *,
           state: Mapping | None = None, save: Callable[[dict], None] | None = None,
           progress: Callable[[int, dict], None] | None = None) -> dict:
    """Run (or resume from ``state``) the archive search; returns the final state:
    ``{"archive": [...], "generation": g, "proposals": n, "valid_proposals": n, "evaluations": n}``.

    Each generation draws from ``random.Random(seed * 1000 + generation)``, so a resumed search
    proposes exactly what an uninterrupted one would. ``save`` is called after each generation.
    """
    families = list(backend.families)
    if state is None:
        archive = []
        for seed_design in SEED_DESIGNS:
            entry = evaluate_entry(seed_design, backend, items, settings)
            entry["seed"] = True
            entry["generation"] = 0
            archive.append(entry)
        state = {"archive": archive, "generation": 0, "proposals": 0, "valid_proposals": 0,
                 "evaluations": len(archive)}
        if save:
            save(state)
    state = copy.deepcopy(dict(state))
    seen = {canonical(e) for e in state["archive"]}
    while state["generation"] < settings.generations:
        generation = state["generation"] + 1
        rng = random.Random(settings.seed * 1000 + generation)
        for p in range(settings.proposals_per_generation):
            proposal = propose(state["archive"], rng, families)
            proposal["name"] = f"g{generation}p{p}:{proposal['name']}"[:80]
            state["proposals"] += 1
            if validation_errors(proposal, families):
                continue
            state["valid_proposals"] += 1
            key = canonical(proposal)
            if key in seen:
                continue
            seen.add(key)
            entry = evaluate_entry(proposal, backend, items, settings)
            entry["seed"] = False
            entry["generation"] = generation
            state["archive"].append(entry)
            state["evaluations"] += 1
        state["generation"] = generation
        if save:
            save(state)
        if progress:
            progress(generation, state)
    return state


def best_designs(archive: Sequence[Mapping]) -> tuple[dict, dict | None]:
    """``(best hand-written, best discovered)`` by validation fitness; the discovered one is a
    non-seed design using no more model calls per item (on validation) than the hand-written one,
    or None when no such design was found."""
    seeds = [e for e in archive if e["seed"]]
    hand = max(seeds, key=lambda e: (e["fitness"], -e["calls_per_item"]))
    found = [e for e in archive if not e["seed"] and e["calls_per_item"] <= hand["calls_per_item"] + 1e-9]
    best = max(found, key=lambda e: (e["fitness"], -e["calls_per_item"])) if found else None
    return hand, best


def as_design(entry: Mapping) -> dict:
    """The runnable design of an archive entry (its name and blocks only)."""
    return {"name": entry["name"], "blocks": copy.deepcopy(list(entry["blocks"]))}
