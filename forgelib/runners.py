"""One loader for every kind of model a ``forge`` command accepts, and how each one answers.

- ``plain``: a Hugging Face directory or a compressed container; greedy ``generate``.
- ``specialized``: a directory or container carrying the specialize stage's SVF experts
  (``specialize.json`` + ``svf_experts.safetensors``): each prompt is dispatched to a family and
  answered with that family's expert applied (:class:`forgelib.specialize.model.SpecializedModel`).
  Plain transformers loads the same directory as the baked model without experts.
- ``thinking``: a Quiet-STaR directory (``quietstar.json`` + ``mixing_head.safetensors``): it
  generates a thought, hides it, and answers through its mixing head
  (:class:`forgelib.quietstar.model.ThinkingModel`).

``forge eval``, ``forge test`` and ``forge serve`` go through :func:`load_runner`, so a model
that adapts or thinks is evaluated and served the way it answers.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Mapping


class Runner:
    """A loaded model and the way it answers (see the module docstring)."""

    kind = "plain"

    def __init__(self, model, tokenizer, where: str):
        self.model, self.tokenizer, self.where = model, tokenizer, where

    def evaluate(self, tasks: Mapping, *, split: str = "test", limit: int | None = None) -> dict:
        from forgelib.eval.evaluate import evaluate_model

        return evaluate_model(self.model, self.tokenizer, tasks, split=split, limit=limit)

    def adapt(self, prompt: str) -> contextlib.AbstractContextManager:
        """What this model does to its weights while it answers ``prompt`` (nothing here)."""
        return contextlib.nullcontext()

    def stream(self, prompt: str, *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
               show_thoughts: bool = False) -> Iterator[str]:
        from forgelib.eval.generate import stream_generate

        with self.adapt(prompt):
            yield from stream_generate(self.model, self.tokenizer, prompt, max_new_tokens=max_new_tokens,
                                       temperature=temperature, seed=seed)


class SpecializedRunner(Runner):
    kind = "specialized"

    def __init__(self, spec, where: str):
        super().__init__(spec.model, spec.tokenizer, where)
        self.spec = spec

    def evaluate(self, tasks: Mapping, *, split: str = "test", limit: int | None = None) -> dict:
        result = self.spec.evaluate(tasks, split=split, limit=limit)
        result["adapted"] = "SVF expert per prompt, chosen by the dispatcher"
        return result

    def adapt(self, prompt: str) -> contextlib.AbstractContextManager:
        from forgelib.specialize.svf import svf_applied

        family = self.spec.dispatch([prompt])[0]
        return svf_applied(self.spec.model, self.spec.svd, self.spec.experts[family], self.spec.max_mult)


class ThinkingRunner(Runner):
    kind = "thinking"

    def __init__(self, thinker, where: str):
        super().__init__(thinker.lm, thinker.tokenizer, where)
        self.thinker = thinker

    def evaluate(self, tasks: Mapping, *, split: str = "test", limit: int | None = None) -> dict:
        result = self.thinker.evaluate(tasks, split=split, limit=limit)
        result["thinking"] = "a thought is generated before each answer, then hidden"
        return result

    def stream(self, prompt: str, *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
               show_thoughts: bool = False) -> Iterator[str]:
        from forgelib.errors import ForgeError

        if temperature > 0:
            raise ForgeError("a thinking model answers greedily here; drop --temperature")
        (answer, thought), = self.thinker.answers([prompt], max_new_tokens=max_new_tokens, return_thoughts=True)
        if show_thoughts:
            yield f"[thought: {thought}] "
        yield answer


def load_runner(path: str | os.PathLike) -> Runner:
    """The runner for ``path`` (a model directory or a compressed container, file or directory)."""
    from forgelib.compress.loader import container_path, load_model_any, side_files_any

    where = str(path)
    if container_path(path) is None and Path(path).is_dir():
        from forgelib.quietstar.model import is_thinking

        if is_thinking(path):
            from forgelib.quietstar.model import ThinkingModel

            return ThinkingRunner(ThinkingModel.load(path), where)
    model, tokenizer = load_model_any(path)
    files = side_files_any(path)
    from forgelib.specialize.model import SIDE_JSON, SpecializedModel

    if SIDE_JSON in files:
        return SpecializedRunner(SpecializedModel.from_parts(model, tokenizer, files, where=where), where)
    return Runner(model, tokenizer, where)
