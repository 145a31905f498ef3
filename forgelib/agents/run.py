"""The ``agents`` stage: tools over MCP, the surprise-gated memory, and ADAS, on the specialized model.

1. **Tools** (:func:`forgelib.agents.tool_arms.run_tool_arms`): the specialized model is
   fine-tuned to write calculator calls; ``models/agents/`` is that tool model (a Hugging Face
   directory). Arms: no tool, the MCP tool, a wrong tool, an oracle call.
2. **Memory** (:func:`forgelib.agents.memory_arms.run_memory_arms`): gated writes against writes
   off, every write and random writes, at the same number of writes, over seeds.
3. **ADAS** (:mod:`forgelib.agents.adas`): designs over the specialized model (Route to its SVF
   experts), the tool model (ToolCall, Verify through the MCP server over stdio) and a memory of
   training examples (MemoryLookup), searched on validation items and compared on the test
   split. The archive is saved after every generation under ``checkpoints/agents/`` (a killed
   run resumes there); ``agents/archive.json`` and ``agents/best.json`` are the stage's outputs.

Everything is written atomically after the work is done: ``metrics/agents.json`` has the
contract keys of issue 14 (with details beside them).
"""

from __future__ import annotations

import dataclasses
import random
import sys
from pathlib import Path
from typing import Mapping

from forgelib.agents import adas
from forgelib.agents.config import AgentsConfig
from forgelib.errors import ForgeError
from forgelib.io import read_json, write_json
from forgelib.resume import StateDir, fingerprint_files


class _Plain:
    """A model without SVF experts, shaped like SpecializedModel for the backend (Route is then a
    no-op: the dispatcher is absent and every family uses the plain weights)."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.experts, self.svd, self.max_mult, self.families = {}, {}, 1.0, []

    def dispatch(self, prompts):
        return [None] * len(prompts)


def load_generator(model_path: str | Path):
    """The specialized model at ``model_path`` (experts and dispatcher), or a plain one."""
    from forgelib.runners import load_runner

    runner = load_runner(model_path)
    return runner.spec if runner.kind == "specialized" else _Plain(runner.model, runner.tokenizer)


def make_backend(model_path: str | Path, tool_model_path: str | Path | None, client, *, memory=None,
                 max_new_tokens: int = 12):
    """The ADAS backend: generation from ``model_path``, calls from ``tool_model_path`` via ``client``."""
    from forgelib.agents.backend import ModelBackend
    from forgelib.agents.toolcall import mcp_tool

    tool_model = tool_tok = None
    if tool_model_path is not None:
        from forgelib.models.hf import load_model

        tool_model, tool_tok = load_model(tool_model_path)
        tool_model.eval()
    return ModelBackend(load_generator(model_path), tool_model=tool_model, tool_tokenizer=tool_tok,
                        call_tool=mcp_tool(client) if client is not None else None, memory=memory,
                        max_new_tokens=max_new_tokens)


def split_items(tasks: Mapping, split: str, per_task: int | None, seed: int) -> list[dict]:
    """``per_task`` rows of each task's ``split`` (a seeded draw; all rows when None)."""
    items = []
    for name, splits in tasks.items():
        rows = list(splits[split])
        if per_task is not None and per_task < len(rows):
            rows = random.Random(f"{seed}:adas:{split}:{name}").sample(rows, per_task)
        items += [{"prompt": r["prompt"], "answer": r["answer"], "task": name} for r in rows]
    return items


def per_task_accuracy(items, outcome) -> dict[str, float]:
    by: dict[str, list[bool]] = {}
    for item, ok in zip(items, outcome.correct):
        by.setdefault(item["task"], []).append(ok)
    return {t: sum(v) / len(v) for t, v in by.items()}


def run_adas(cfg: AgentsConfig, *, tasks: Mapping, model_dir: str | Path, tool_model_dir: str | Path,
             state_dir: str | Path, identity: Mapping) -> tuple[dict, dict, list[dict]]:
    """``(metrics, best design, archive)``; resumes from ``state_dir`` when it holds this run."""
    from forgelib.agents.backend import training_memory
    from forgelib.agents.mcp_client import McpClient
    from tqdm.auto import tqdm

    a = cfg.adas
    settings = adas.SearchSettings(generations=a.generations, proposals_per_generation=a.proposals_per_generation,
                                   call_penalty=a.call_penalty, resamples=a.resamples, seed=cfg.seed)
    validation = split_items(tasks, "validation", a.validation_per_task, cfg.seed)
    test = split_items(tasks, "test", a.test_per_task, cfg.seed)
    state_store = StateDir(state_dir, identity)
    state = read_json(state_store.file("search.json")) if state_store.open() and state_store.file("search.json").is_file() else None
    if state is not None:
        print(f"{state_dir}: resuming the ADAS search after generation {state['generation']}", file=sys.stderr)
    memory = training_memory(tasks, per_task=a.memory_per_task, seed=cfg.seed)
    with McpClient() as client:
        backend = make_backend(model_dir, tool_model_dir, client, memory=memory, max_new_tokens=a.max_new_tokens)
        bar = tqdm(total=a.generations, initial=state["generation"] if state else 0, desc="adas generations", leave=False)
        final = adas.search(backend, validation, settings, state=state,
                            save=lambda s: write_json(state_store.file("search.json"), s),
                            progress=lambda g, s: bar.update(1))
        bar.close()
        hand, best = adas.best_designs(final["archive"])
        chosen = best or hand
        hand_test = adas.run_design(adas.as_design(hand), backend, [r["prompt"] for r in test], [r["answer"] for r in test])
        best_test = adas.run_design(adas.as_design(chosen), backend, [r["prompt"] for r in test],
                                    [r["answer"] for r in test]) if best is not None else None
        latencies = list(backend.tool_latencies)
        startup_s = client.startup_s
    metrics = {
        "best_test": best_test.accuracy if best_test else None,
        "best_hand_test": hand_test.accuracy,
        "best_calls_per_item": best_test.calls_per_item if best_test else None,
        "hand_calls_per_item": hand_test.calls_per_item,
        "evaluations": final["evaluations"],
        "valid_proposals": final["valid_proposals"],
        "proposals": final["proposals"],
        "best_design": chosen["name"] if best else None,
        "best_hand_design": hand["name"],
        "best_validation": best["validation"] if best else None,
        "best_hand_validation": hand["validation"],
        "validation_to_test_gap": {"best": (best["validation"] - best_test.accuracy) if best else None,
                                   "hand": hand["validation"] - hand_test.accuracy},
        "best_test_by_task": per_task_accuracy(test, best_test) if best_test else None,
        "hand_test_by_task": per_task_accuracy(test, hand_test),
        "validation_items": len(validation), "test_items": len(test),
        "fitness": f"bootstrap median of validation accuracy ({a.resamples} resamples) - "
                   f"{a.call_penalty} x model calls per item",
        "mcp_calls": len(latencies), "mcp_startup_s": startup_s,
        "no_generated_code": "designs are JSON interpreted by forgelib.agents.adas; no proposal is Python",
    }
    design = adas.as_design(chosen)
    return metrics, design, final["archive"]


def run_agents(cfg: AgentsConfig, *, data_dir: str | Path, input_dir: str | Path, out_dir: str | Path,
               agents_dir: str | Path, state_dir: str | Path, metrics_path: str | Path) -> dict:
    from forgelib.agents.memory_arms import MemoryArmsSettings, submit_memory_arms
    from forgelib.agents.tool_arms import run_tool_arms
    from forgelib.data.tasks import load_tasks
    from forgelib.io import atomic_dir
    from forgelib.models.hf import require_model_dir
    from forgelib.runtime import worker_pool

    require_model_dir(input_dir, "agents input (the specialized model)")
    tasks = load_tasks(data_dir)
    # dvc.yaml declares the ADAS state directory as an output (persist: a killed search resumes):
    # it must exist even when the search is off, or DVC fails the finished stage
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    m = cfg.memory
    # the memory seeds run in worker processes while this one trains the tool model (one worker:
    # one after another, here, before the tools); neither depends on the other
    with worker_pool(len(m.seeds) if m.enabled else 1) as pool:
        memory_result = None
        if m.enabled:
            settings = MemoryArmsSettings(distances=tuple(m.distances), episodes_per_distance=m.episodes_per_distance,
                                          n_facts=m.n_facts, budget=m.budget, finetune_steps=m.finetune_steps)
            memory_result = submit_memory_arms(pool, input_dir, seeds=tuple(m.seeds), settings=settings)
        tools = run_tool_arms(input_dir, data_dir=data_dir, out_model_dir=out_dir, config=cfg.tools)
        memory = memory_result() if memory_result else None
    adas_metrics, design, archive = None, None, None
    if cfg.adas.enabled:
        identity = {"agents": dataclasses.asdict(cfg),
                    "inputs": fingerprint_files([input_dir, out_dir, data_dir])}
        adas_metrics, design, archive = run_adas(cfg, tasks=tasks, model_dir=input_dir, tool_model_dir=out_dir,
                                                 state_dir=state_dir, identity=identity)
    with atomic_dir(agents_dir) as tmp:
        if design is not None:
            write_json(tmp / "best.json", design)
            write_json(tmp / "archive.json", {"designs": archive, "schema": adas.DESIGN_SCHEMA})
    metrics = {
        "tools": {k: tools[k] for k in ("no_tool", "mcp", "wrong_tool", "oracle_call")},
        "memory": {k: memory[k] for k in ("on", "off", "write_all", "random_writes", "std", "by_distance")} if memory else None,
        "adas": adas_metrics,
        "details": {"tools": tools.get("details"),
                    "memory": {k: v for k, v in memory.items() if k not in ("on", "off", "write_all", "random_writes",
                                                                            "std", "by_distance")} if memory else None},
    }
    write_json(metrics_path, metrics)
    return metrics


def load_design(path: str | Path, families=()) -> dict:
    """A design file, validated (a ForgeError names the file and the problem)."""
    path = Path(path)
    if not path.is_file():
        raise ForgeError(f"{path}: design file not found; run `dvc repro agents` or pass --design")
    try:
        design = read_json(path)
    except ValueError as exc:
        raise ForgeError(f"{path}: not JSON ({exc})") from None
    return adas.check_design(design, families, where=str(path))
