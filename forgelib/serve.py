"""`forge serve`: an OpenAI-compatible HTTP server for any model `forge eval` accepts.

Endpoints (the subset of the OpenAI API that a completion model needs):

- ``GET /health`` -> ``{"status": "ok", "model": ID}``;
- ``GET /v1/models`` -> the one served model;
- ``POST /v1/completions`` with ``{"model", "prompt", "max_tokens", "temperature", "stop",
  "seed", "stream"}``;
- ``POST /v1/chat/completions`` with ``{"model", "messages", ...}`` (same options). The prompt is
  the tokenizer's chat template applied to the messages when it has one (SmolLM2-Instruct);
  the embedded default's character-level models have none, and their prompt is the messages'
  contents joined by newlines (e.g. one user message ``"62+37%97="``).

``stream: true`` answers with server-sent events (``data: {chunk}`` ... ``data: [DONE]``), as
OpenAI does. Decoding is greedy at ``temperature`` 0 and sampled (seeded by ``seed``, default 0)
otherwise; it stops at the end-of-sequence token, at a ``stop`` string (not included in the
text), at ``max_tokens`` or at the model's context length (``finish_reason`` ``"stop"`` or
``"length"``). ``ignore_eos: true`` (an extension named as in vLLM) masks the end-of-sequence
token, as transformers' ``min_new_tokens`` does, so exactly ``max_tokens`` tokens are decoded
(for benchmarks).

Engines (``forge serve --engine``): the server logic (validation, tokenization, the chat template,
sampling, stop strings, streaming, finish reasons, admission) is one code path; only the
forward pass, "feed new token ids, return the next token's logits, keep a cache", is pluggable:

- ``torch`` (default): transformers with its KV cache (:class:`forgelib.serve_engines.TorchEngine`); the only engine
  that runs a specialized model's per-prompt adaptation;
- ``llama-cpp``: llama.cpp through ``llama-cpp-python`` (:class:`forgelib.serve_engines.LlamaCppEngine`), optional (not
  part of ``make venv``). At start-up the served model is written by Forge's own GGUF exporter
  (:func:`forgelib.export.gguf.write_gguf`, ``--gguf-type``, F16 by default) and read by llama.cpp;
  the file is deleted as soon as llama.cpp has read it (``use_mmap=False``), so a killed server
  leaves nothing behind. llama.cpp only sees token ids: its vocabulary is switched off
  (``tokenizer.ggml.model`` overridden to ``none``), because the prompt is tokenized by the model's
  own tokenizer, and llama.cpp refuses the embedded default's character-level GGUF vocabulary
  (no merges; see :mod:`forgelib.export.gguf_vocab`).

Concurrency: the HTTP layer is a thread per connection (:class:`ThreadingHTTPServer`); the model
runs one request at a time under a lock, the others wait in line. At most ``max_pending``
requests may be admitted (running or waiting); one more is answered ``429`` with an OpenAI-style
error body at once, so a burst beyond what the machine can serve fails fast instead of timing
out. Every bad request (invalid JSON, a missing or mistyped field, an unknown model, a value out
of range, an unknown path) gets a 4xx with ``{"error": {"message", "type", "param", "code"}}``;
the server logs one line per request to stderr. It binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import torch

from forgelib.errors import ForgeError
from forgelib.serve_engines import TorchEngine

MAX_TOKENS_LIMIT = 4096


class RequestError(Exception):
    """A client error: HTTP status, OpenAI error type, message, the offending param."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Options:
    """A validated request."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    seed: int
    stop: list[str]
    stream: bool
    ignore_eos: bool = False


@dataclass
class Piece:
    """Generated text so far: the new text, and a finish reason once decoding ended."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0


@dataclass
class ModelServer:
    """The model, its tokenizer, the engine that runs its forward pass and the admission control
    shared by the handler threads."""

    model: Any
    tokenizer: Any
    model_id: str
    max_pending: int = 32
    created: int = field(default_factory=lambda: int(time.time()))
    adapt: Any = None
    """Optional ``prompt text -> context manager`` held while one request decodes: a specialized
    model applies the SVF expert its dispatcher picks for that prompt (:mod:`forgelib.runners`);
    it changes the torch weights, so it needs the torch engine."""
    engine: Any = None
    """The forward pass: :class:`TorchEngine` over ``model`` when None, or :class:`LlamaCppEngine`."""

    def __post_init__(self):
        if self.engine is None:
            self.engine = TorchEngine(self.model)
        if self.adapt is not None and not isinstance(self.engine, TorchEngine):
            raise ForgeError(f"--engine {self.engine.name}: a model that adapts per prompt needs --engine torch")
        self.lock = threading.Lock()  # one generation at a time
        self._pending = 0
        self._pending_lock = threading.Lock()
        self.context_length = self.engine.context_length

    def close(self) -> None:
        self.engine.close()

    # -- admission ---------------------------------------------------------------------------
    def admit(self) -> None:
        with self._pending_lock:
            if self._pending >= self.max_pending:
                raise RequestError(429, f"server busy: {self._pending} requests are running or queued "
                                        f"(limit {self.max_pending}); retry later",
                                   kind="rate_limit_error", code="rate_limit_exceeded")
            self._pending += 1

    def release(self) -> None:
        with self._pending_lock:
            self._pending -= 1

    # -- requests ----------------------------------------------------------------------------
    def options(self, body: dict, prompt_text: str) -> Options:
        model = body.get("model")
        if model is None:
            raise RequestError(400, "missing required field 'model'", param="model")
        if model != self.model_id:
            raise RequestError(404, f"model {model!r} is not served here; GET /v1/models lists {self.model_id!r}",
                               param="model", code="model_not_found")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 16))
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
            raise RequestError(400, f"max_tokens must be an integer in 1..{MAX_TOKENS_LIMIT}, got {max_tokens!r}",
                               param="max_tokens")
        temperature = body.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise RequestError(400, f"temperature must be a number in [0, 2], got {temperature!r}", param="temperature")
        seed = body.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise RequestError(400, f"seed must be an integer, got {seed!r}", param="seed")
        n = body.get("n", 1)
        if n != 1:
            raise RequestError(400, f"only n=1 is supported, got {n!r}", param="n")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
            raise RequestError(400, "stop must be a non-empty string or a list of up to 4 of them", param="stop")
        stream, ignore_eos = body.get("stream", False), body.get("ignore_eos", False)
        for name, value in (("stream", stream), ("ignore_eos", ignore_eos)):
            if not isinstance(value, bool):
                raise RequestError(400, f"{name} must be true or false, got {value!r}", param=name)
        has_template = bool(getattr(self.tokenizer, "chat_template", None)) and "messages" in body
        ids = self.tokenizer(prompt_text, add_special_tokens=not has_template)["input_ids"]
        if not ids:
            raise RequestError(400, "the prompt is empty", param="prompt")
        if len(ids) >= self.context_length:
            raise RequestError(400, f"the prompt is {len(ids)} tokens; this model's context is {self.context_length}",
                               param="prompt", code="context_length_exceeded")
        return Options(ids, max_tokens, float(temperature), seed, stop, stream, ignore_eos)

    def chat_text(self, body: dict) -> str:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "missing required field 'messages' (a non-empty list)", param="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or not isinstance(m.get("role"), str):
                raise RequestError(400, f"messages[{i}] must be an object with string 'role' and 'content'",
                                   param=f"messages[{i}]")
        if getattr(self.tokenizer, "chat_template", None):
            plain = [{"role": m["role"], "content": m["content"]} for m in messages]
            return self.tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
        return "\n".join(m["content"] for m in messages)

    @staticmethod
    def completion_text(body: dict) -> str:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise RequestError(400, "missing required field 'prompt' (a string)", param="prompt")
        return prompt

    # -- decoding ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, opts: Options) -> Iterator[Piece]:
        """Decode token by token with the KV cache; yield text as it becomes final (with the
        per-prompt adaptation, when the model has one, applied throughout)."""
        if self.adapt is None:
            yield from self._decode(opts)
            return
        with self.adapt(self.tokenizer.decode(opts.prompt_ids, skip_special_tokens=True)):
            yield from self._decode(opts)

    def _decode(self, opts: Options) -> Iterator[Piece]:
        generator = torch.Generator().manual_seed(opts.seed)
        eos = self.tokenizer.eos_token_id
        budget = min(opts.max_tokens, self.context_length - len(opts.prompt_ids))
        self.engine.reset()
        ids, out, emitted, final = opts.prompt_ids, [], "", None
        finish = "length"
        for _ in range(budget):
            logits = self.engine.feed(ids)
            if opts.ignore_eos and eos is not None:
                logits[eos] = -math.inf
            if opts.temperature > 0:
                probs = torch.softmax(logits / opts.temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            else:
                token = int(logits.argmax())
            if token == eos:
                finish = "stop"
                break
            out.append(token)
            ids = [token]
            text = self.tokenizer.decode(out, skip_special_tokens=True)
            hits = [text.find(s) for s in opts.stop if s in text]
            if hits:
                final, finish = text[:min(hits)], "stop"
                break
            # Emit only text that is final: hold back a partial multi-byte character and any
            # tail that may be the start of a stop string.
            safe = len(text.rstrip("\ufffd"))
            for s in opts.stop:
                for k in range(min(len(s) - 1, safe), 0, -1):
                    if text[:safe].endswith(s[:k]):
                        safe -= k
                        break
            if safe > len(emitted):
                yield Piece(text[len(emitted):safe], completion_tokens=len(out))
                emitted = text[:safe]
        if final is None:
            final = self.tokenizer.decode(out, skip_special_tokens=True)
        if len(final) > len(emitted):
            yield Piece(final[len(emitted):], completion_tokens=len(out))
        yield Piece("", finish_reason=finish, completion_tokens=len(out))


def _chunk(kind: str, request_id: str, server: ModelServer, piece: Piece, first: bool) -> dict:
    base = {"id": request_id, "created": int(time.time()), "model": server.model_id}
    if kind == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if piece.text:
            delta["content"] = piece.text
        return {**base, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": piece.finish_reason, "logprobs": None}]}
    return {**base, "object": "text_completion",
            "choices": [{"index": 0, "text": piece.text, "finish_reason": piece.finish_reason, "logprobs": None}]}


def make_handler(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "forge-serve"

        def log_message(self, fmt, *args):  # stdout stays clean; one line per request on stderr
            sys.stderr.write(f"[forge serve] {self.address_string()} {fmt % args}\n")

        def _json(self, status: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, exc: RequestError) -> None:
            self._json(exc.status, exc.body())

        def do_GET(self):
            if self.path in ("/health", "/v1/health"):
                return self._json(200, {"status": "ok", "model": server.model_id})
            if self.path == "/v1/models":
                return self._json(200, {"object": "list", "data": [
                    {"id": server.model_id, "object": "model", "created": server.created, "owned_by": "forge"}]})
            if self.path == f"/v1/models/{server.model_id}":
                return self._json(200, {"id": server.model_id, "object": "model", "created": server.created,
                                        "owned_by": "forge"})
            self._error(RequestError(404, f"no route GET {self.path}", code="not_found"))

        def do_POST(self):
            kinds = {"/v1/completions": "text", "/v1/chat/completions": "chat"}
            try:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.path not in kinds:
                    raise RequestError(404, f"no route POST {self.path}", code="not_found")
                try:
                    body = json.loads(raw or b"null")
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise RequestError(400, f"invalid JSON body: {exc}") from None
                if not isinstance(body, dict):
                    raise RequestError(400, "the body must be a JSON object")
                kind = kinds[self.path]
                text = server.chat_text(body) if kind == "chat" else server.completion_text(body)
                opts = server.options(body, text)
                server.admit()
            except RequestError as exc:
                return self._error(exc)
            try:
                self._answer(kind, opts)
            finally:
                server.release()

        def _answer(self, kind: str, opts: Options) -> None:
            request_id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
            with server.lock:
                if opts.stream:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-cache")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    first = True
                    for piece in server.generate(opts):
                        self._sse(json.dumps(_chunk(kind, request_id, server, piece, first)))
                        first = False
                    self._sse("[DONE]")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                pieces = list(server.generate(opts))
            text = "".join(p.text for p in pieces)
            finish, used = pieces[-1].finish_reason, pieces[-1].completion_tokens
            usage = {"prompt_tokens": len(opts.prompt_ids), "completion_tokens": used,
                     "total_tokens": len(opts.prompt_ids) + used}
            base = {"id": request_id, "created": int(time.time()), "model": server.model_id, "usage": usage}
            if kind == "chat":
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                          "logprobs": None}
                return self._json(200, {**base, "object": "chat.completion", "choices": [choice]})
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            self._json(200, {**base, "object": "text_completion", "choices": [choice]})

        def _sse(self, payload: str) -> None:
            data = f"data: {payload}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler


def make_server(server: ModelServer, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server bound to ``host:port`` (port 0 picks a free one), not yet serving."""
    httpd = ThreadingHTTPServer((host, port), make_handler(server))
    httpd.daemon_threads = True
    return httpd
