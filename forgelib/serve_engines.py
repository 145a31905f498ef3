"""The forward passes `forge serve` can run (``--engine``): "feed new token ids, return the next
token's logits, keep a cache". :mod:`forgelib.serve` holds everything else (validation, sampling,
streaming, admission), one code path for every engine; its docstring describes the engines.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import torch

from forgelib.errors import ForgeError

ENGINES = ("torch", "llama-cpp")
LLAMA_CPP_HINT = ("install it with `pip install llama-cpp-python` (no wheel here: it builds llama.cpp from "
                  "source, about 7 minutes), or serve with --engine torch")


def model_context(model) -> int:
    """The longest sequence ``model`` was built for (2048 when its config does not say)."""
    return int(getattr(getattr(model, "config", None), "max_position_embeddings", 0) or 2048)


class TorchEngine:
    """The forward pass through transformers, with its KV cache (``DynamicCache``)."""

    name = "torch"

    def __init__(self, model):
        self.model, self.context_length = model.eval(), model_context(model)
        self._cache = None

    def describe(self) -> str:
        return f"engine torch (transformers {next(self.model.parameters()).dtype}, {torch.get_num_threads()} threads)"

    def reset(self) -> None:
        self._cache = None

    @torch.no_grad()
    def feed(self, ids: list[int]) -> torch.Tensor:
        """Append ``ids`` to the cached sequence; the logits (vocab,) of the token after the last."""
        result = self.model(input_ids=torch.tensor([ids]), cache=self._cache, use_cache=True)
        self._cache = result.cache
        return result.logits[0, -1].float()

    def close(self) -> None:
        pass


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise ForgeError(f"--engine llama-cpp: the llama_cpp module is not installed; {LLAMA_CPP_HINT}") from None
    return llama_cpp


class LlamaCppEngine:
    """The forward pass through llama.cpp, on the model exported by Forge's GGUF writer (see the
    module docstring). ``threads`` defaults to torch's thread count (``FORGE_NUM_THREADS``)."""

    name = "llama-cpp"

    def __init__(self, model, tokenizer, *, gguf_type: str = "f16", threads: int | None = None,
                 name: str = "forge-serve"):
        from forgelib.export.gguf import write_gguf

        llama_cpp = import_llama_cpp()
        self.context_length = model_context(model)
        self.gguf_type, self.threads = gguf_type, threads or torch.get_num_threads()
        with tempfile.TemporaryDirectory(prefix="forge-serve-") as tmp:
            path = Path(tmp) / "model.gguf"
            try:
                write_gguf(model, tokenizer, path, gguf_type=gguf_type, name=name)
            except ForgeError as exc:
                raise ForgeError(f"--engine llama-cpp needs the model as GGUF: {exc}; "
                                 "serve it with --engine torch") from None
            self.gguf_bytes = path.stat().st_size
            # llama.cpp's log goes to sys.stderr through llama-cpp-python even with verbose=False (a
            # warning that it pads the context to 256 tokens): kept only to explain a failed load.
            log = io.StringIO()
            try:
                with contextlib.redirect_stderr(log):
                    self.llm = llama_cpp.Llama(
                        model_path=str(path), n_ctx=self.context_length, n_threads=self.threads,
                        n_threads_batch=self.threads, logits_all=False, use_mmap=False, verbose=False,
                        kv_overrides={"tokenizer.ggml.model": "none"})
            except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
                raise ForgeError(f"--engine llama-cpp: llama.cpp cannot load the exported GGUF ({exc}; "
                                 f"{log.getvalue().strip()[-300:]}); serve it with --engine torch") from None
        self.n_vocab = self.llm.n_vocab()
        rows = model.get_output_embeddings().weight.shape[0]
        if self.n_vocab != rows or len(tokenizer) > self.n_vocab:
            self.close()
            raise ForgeError(f"--engine llama-cpp: llama.cpp reads {self.n_vocab} vocabulary rows, the model has "
                             f"{rows} and its tokenizer {len(tokenizer)}; serve it with --engine torch")
        self._logits_ith = llama_cpp.llama_get_logits_ith

    def describe(self) -> str:
        return (f"engine llama-cpp (GGUF {self.gguf_type}, {self.gguf_bytes / 1e6:.1f} MB, "
                f"{self.threads} threads)")

    def reset(self) -> None:
        self.llm.reset()

    def feed(self, ids: list[int]) -> torch.Tensor:
        self.llm.eval(ids)  # logits_all=False: llama.cpp computes the last position's row only
        row = np.ctypeslib.as_array(self._logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))
        return torch.from_numpy(row.copy())

    def close(self) -> None:
        self.llm.close()


def check_engine(engine: str, gguf_type: str) -> None:
    """Fail fast, before any model loads, on an engine name or GGUF type ``forge serve`` does not know."""
    from forgelib.export.config import GGUF_TYPES

    if engine not in ENGINES:
        raise ForgeError(f"--engine: unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if gguf_type not in GGUF_TYPES:
        raise ForgeError(f"--gguf-type: unknown type {gguf_type!r}; valid: {', '.join(GGUF_TYPES)}")


def engine_for(runner, engine: str = "torch", *, gguf_type: str = "f16"):
    """The engine that serves ``runner`` (:func:`forgelib.runners.load_runner`). A specialized model
    adapts its weights per prompt in torch, which llama.cpp cannot follow: refused there."""
    check_engine(engine, gguf_type)
    if engine == "torch":
        return TorchEngine(runner.model)
    if runner.kind == "specialized":
        raise ForgeError(f"--engine llama-cpp: {runner.where} is a specialized model: it applies an SVF expert "
                         "per prompt, which llama.cpp cannot run on the exported weights; serve it with --engine torch")
    return LlamaCppEngine(runner.model, runner.tokenizer, gguf_type=gguf_type,
                          name=Path(runner.where).name or "forge-serve")
