"""What an agent design (:mod:`forgelib.agents.adas`) runs on: the specialized model and its SVF
experts, the tool-trained model calling the calculator over MCP, and an episodic memory.

- ``generate``: the specialized model's weights, with a Route'd SVF expert applied
  (:func:`forgelib.specialize.svf.svf_applied`), greedy or sampled. Sampling is seeded from the
  call's arguments, so it is a pure function of them (a design's score never depends on which
  designs ran before it, and a resumed search repeats an uninterrupted one).
- ``dispatch``: the specialize stage's dispatcher (one forward pass per prompt).
- ``tool_answers``: the tool-trained model writes ``[calc:EXPR]`` (:mod:`forgelib.agents.toolcall`),
  the MCP server evaluates it, the model copies the result; None when it wrote no call, a
  malformed one, or the tool refused it.
- ``memory_contexts``: the nearest stored training example (``prompt`` + ``answer``, episodic
  memory keyed by the prompt's character n-grams) prepended to the prompt as a demonstration.
- ``well_formed``: the answer's shape for the prompt's task family, read from the prompt's own
  format (digits for sums, yes/no for brackets, bits for parity, letters or digits of the input's
  length for the string tasks); it never looks at the right answer.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

import torch

from forgelib.eval.generate import greedy_answers

_PREFIXED = re.compile(r"^([a-z]{3}):(.*)=$")


def well_formed(prompt: str, answer: str) -> bool:
    """Whether ``answer`` has the shape the prompt's task asks for (see the module docstring)."""
    found = _PREFIXED.match(prompt)
    if found is None:  # arithmetic: '96+39=' or '59+86%97='
        return answer.isdigit() and len(answer) <= 6
    kind, body = found.groups()
    if kind == "bal":
        return answer in ("yes", "no")
    if kind == "par":
        return len(answer) == len(body) and set(answer) <= {"0", "1"}
    if kind in ("rev", "cpy", "srt"):
        return len(answer) == len(body) and sorted(answer) == sorted(body)
    return bool(answer)


def _seed(*parts) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class ModelBackend:
    """The :class:`forgelib.agents.adas.Backend` of a specialized model, a tool model and a memory."""

    def __init__(self, specialized, *, tool_model=None, tool_tokenizer=None, call_tool=None, memory=None,
                 max_new_tokens: int = 12, batch_size: int = 256):
        self.spec = specialized
        self.model = specialized.model
        self.tokenizer = specialized.tokenizer
        self.families = tuple(specialized.families)
        self.tool_model, self.tool_tokenizer, self.call_tool = tool_model, tool_tokenizer, call_tool
        self.memory = memory
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self._cache: dict = {}
        self.tool_latencies: list[float] = []

    def _expert(self, expert: str | None):
        return None if expert in (None, "none") else self.spec.experts[expert]

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, k: int, temperature: float, expert: str | None,
                 contexts: Sequence[str], salt: int) -> list[list[str]]:
        from forgelib.specialize.svf import svf_applied

        texts = [c + p for c, p in zip(contexts, prompts)]
        key = ("gen", tuple(texts), k, float(temperature), expert, salt if temperature > 0 else 0)
        if key in self._cache:
            return self._cache[key]
        with svf_applied(self.model, self.spec.svd, self._expert(expert), self.spec.max_mult):
            if temperature == 0:
                out = [[a] for a in greedy_answers(self.model, self.tokenizer, texts, max_new_tokens=self.max_new_tokens,
                                                   batch_size=self.batch_size)]
            else:
                out = self._sample(texts, k, temperature, _seed(texts, k, temperature, expert, salt))
        self._cache[key] = out
        return out

    def _sample(self, texts: list[str], k: int, temperature: float, seed: int) -> list[list[str]]:
        tok, model = self.tokenizer, self.model
        tok.padding_side = "left"
        model.eval()
        out: list[list[str]] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for start in range(0, len(texts), self.batch_size):
                enc = tok(texts[start : start + self.batch_size], return_tensors="pt", padding=True)
                gen = model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=True, temperature=temperature,
                                     top_k=0, top_p=1.0, num_return_sequences=k, eos_token_id=tok.eos_token_id,
                                     pad_token_id=tok.pad_token_id)
                decoded = tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                out += [decoded[i * k : (i + 1) * k] for i in range(len(decoded) // k)]
        return out

    def dispatch(self, prompts: Sequence[str]) -> list[str]:
        key = ("dispatch", tuple(prompts))
        if key not in self._cache:
            self._cache[key] = list(self.spec.dispatch(list(prompts)))
        return self._cache[key]

    def tool_answers(self, prompts: Sequence[str]) -> list[str | None]:
        from forgelib.agents.toolcall import hf_generate, run_with_tools

        if self.tool_model is None or self.call_tool is None:
            return [None] * len(prompts)
        missing = [p for p in dict.fromkeys(prompts) if ("tool", p) not in self._cache]
        if missing:
            generate = hf_generate(self.tool_model, self.tool_tokenizer, max_new_tokens=32, batch_size=self.batch_size)
            for prompt, trace in zip(missing, run_with_tools(missing, generate, self.call_tool, max_calls=1)):
                ok = bool(trace.calls) and not trace.malformed_call and not any(c.reply.is_error for c in trace.calls)
                self.tool_latencies += [c.reply.seconds for c in trace.calls]
                self._cache[("tool", prompt)] = trace.answer if ok else None
        return [self._cache[("tool", p)] for p in prompts]

    def memory_contexts(self, prompts: Sequence[str]) -> list[str]:
        if self.memory is None or len(self.memory) == 0:
            return [""] * len(prompts)
        out = []
        for p in prompts:
            found = self.memory.lookup(p, k=1)
            out.append(f"{found[0][0]} " if found else "")
        return out

    def well_formed(self, prompt: str, answer: str) -> bool:
        return well_formed(prompt, answer)


def training_memory(tasks, *, per_task: int, seed: int):
    """An episodic memory of ``per_task`` training examples per task (key: prompt; value: the
    example written out, prompt then answer), the store MemoryLookup reads."""
    import random

    from forgelib.agents.memory import EpisodicMemory

    rows = []
    for name, splits in tasks.items():
        train = list(splits["train"])
        rows += random.Random(f"{seed}:memory:{name}").sample(train, min(per_task, len(train)))
    memory = EpisodicMemory(capacity=max(1, len(rows)))
    for r in rows:
        memory.write(r["prompt"], r["prompt"] + r["answer"])
    return memory
