"""Time to first token and tokens/s of `forge serve` with each engine, side by side with the same
model called directly, in one run:

- ``transformers_direct``: ``model.generate`` (greedy, KV cache, fp32), no HTTP;
- ``forge_serve_torch``: ``forge serve --engine torch`` (the default) over HTTP;
- ``forge_serve_llamacpp``: ``forge serve --engine llama-cpp`` over HTTP: llama.cpp on the model
  exported at start-up by Forge's own GGUF writer (``--gguf-type``, F16 by default);
- ``llamacpp_direct``: the llama-cpp engine's own llama.cpp model, no HTTP: ``Llama.eval`` per
  token and llama.cpp's own greedy sampler.

    python bench/serve.py                       # the embedded default's models/trained (1 thread)
    python bench/serve.py --smollm2             # also SmolLM2-135M-Instruct (from the packaged GGUF; 2 threads)
    python bench/serve.py --model DIR --json --json-out metrics/bench/serve.json

The servers run in-process on loopback ports and are driven by the official `openai` client,
streaming, so time to first token is measured where a client sees it (HTTP, JSON, SSE included).
Every side decodes exactly ``--max-tokens`` greedy tokens (``ignore_eos``); the prompt comes from
the model's own tokenizer on every side (llama.cpp gets token ids). Sides run interleaved per
prompt, so machine load hits them alike; each number is a median over prompts x repeats.
Greedy text equality is reported, not required, across engines: F16 weights may flip a near-tie
that fp32 does not. ``llamacpp_direct`` decodes on the main thread, the servers on their handler
threads: with 2 threads, llama.cpp here decoded SmolLM2 at ~50-60 tokens/s from any thread but
the main one against ~90 from it (libgomp; 1 thread showed no difference), most of the gap
between the two llama.cpp rows. The llama.cpp rows need ``llama-cpp-python`` (not part of ``make venv``; see
the README); without it they are left out and the script says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forgelib.compress.loader import load_model_any  # noqa: E402
from forgelib.io import write_json  # noqa: E402
from forgelib.serve import ModelServer, make_server  # noqa: E402
from forgelib.serve_engines import LlamaCppEngine  # noqa: E402

SIDES = ("transformers_direct", "forge_serve_torch", "forge_serve_llamacpp", "llamacpp_direct")


def transformers_direct(model, tokenizer, prompt: str, max_tokens: int) -> tuple[float, float, str]:
    """(seconds to first token, tokens/s after it, text) calling model.generate with a streamer."""
    from transformers import TextIteratorStreamer

    enc = tokenizer(prompt, return_tensors="pt")
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    started = time.perf_counter()
    worker = threading.Thread(target=lambda: torch.no_grad()(model.generate)(
        **enc, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False, streamer=streamer,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id))
    worker.start()
    first, pieces = None, []
    for piece in streamer:
        if piece and first is None:
            first = time.perf_counter() - started
        pieces.append(piece)
    worker.join()
    total = time.perf_counter() - started
    return first, (max_tokens - 1) / max(total - first, 1e-9), "".join(pieces)


def llamacpp_direct(llm, tokenizer, prompt: str, max_tokens: int) -> tuple[float, float, str]:
    """(seconds to first token, tokens/s after it, text): llama.cpp's own decode and greedy sampler
    (end-of-sequence masked by a logit bias, as the server's ``ignore_eos`` does), no Python sampling."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    bias = (llama_cpp.llama_logit_bias * 1)()
    bias[0].token, bias[0].bias = tokenizer.eos_token_id, float("-inf")
    llama_cpp.llama_sampler_chain_add(sampler, llama_cpp.llama_sampler_init_logit_bias(llm.n_vocab(), 1, bias))
    llama_cpp.llama_sampler_chain_add(sampler, llama_cpp.llama_sampler_init_greedy())
    llm.reset()  # no prefix reuse from the previous request: the server evaluates every prompt whole
    feed, out = tokenizer(prompt)["input_ids"], []
    started, first = time.perf_counter(), None
    while len(out) < max_tokens:
        llm.eval(feed)
        out.append(llama_cpp.llama_sampler_sample(sampler, llm.ctx, -1))
        feed = out[-1:]
        if first is None:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    llama_cpp.llama_sampler_free(sampler)
    return first, (max_tokens - 1) / max(total - first, 1e-9), tokenizer.decode(out, skip_special_tokens=True)


def served(api, prompt: str, max_tokens: int) -> tuple[float, float, str]:
    """(seconds to first token, tokens/s after it, text) of one streamed completion."""
    started = time.perf_counter()
    first, pieces = None, []
    for chunk in api.completions.create(model="bench", prompt=prompt, max_tokens=max_tokens, temperature=0,
                                        stream=True, extra_body={"ignore_eos": True}):
        text = chunk.choices[0].text
        if text and first is None:
            first = time.perf_counter() - started
        pieces.append(text)
    total = time.perf_counter() - started
    return first, (max_tokens - 1) / max(total - first, 1e-9), "".join(pieces)


def start(server: ModelServer):
    import openai

    httpd = make_server(server, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", api_key="x", max_retries=0)
    return httpd, api


def bench(path: str, prompts: list[str], max_tokens: int, repeats: int, gguf_type: str, llama_cpp) -> dict:
    model, tokenizer = load_model_any(path)
    threads = torch.get_num_threads()
    sides = {"transformers_direct": lambda p: transformers_direct(model, tokenizer, p, max_tokens)}
    servers = [ModelServer(model, tokenizer, model_id="bench")]
    httpd, api = start(servers[0])
    sides["forge_serve_torch"] = lambda p, api=api: served(api, p, max_tokens)
    result = {"threads": threads, "max_tokens": max_tokens, "prompts": len(prompts), "repeats": repeats}
    httpds = [httpd]
    if llama_cpp is not None:
        engine = LlamaCppEngine(model, tokenizer, gguf_type=gguf_type)
        servers.append(ModelServer(model, tokenizer, model_id="bench", engine=engine))
        httpd, api_llama = start(servers[-1])
        httpds.append(httpd)
        sides["forge_serve_llamacpp"] = lambda p: served(api_llama, p, max_tokens)
        result.update(gguf_type=gguf_type, gguf_bytes=engine.gguf_bytes)
        # the engine's own llama.cpp model, called without HTTP (each side resets it per request)
        sides["llamacpp_direct"] = lambda p: llamacpp_direct(engine.llm, tokenizer, p, max_tokens)
    for run in sides.values():  # warm-up: first-call allocations are not what a served request costs
        run(prompts[0])
    rows = {side: {"ttft_s": [], "tokens_per_s": []} for side in sides}
    texts = {side: [] for side in sides}
    for _ in range(repeats):
        for prompt in prompts:
            for side, run in sides.items():
                ttft, tps, text = run(prompt)
                rows[side]["ttft_s"].append(ttft)
                rows[side]["tokens_per_s"].append(tps)
                texts[side].append(text)
    for httpd in httpds:
        httpd.shutdown()
        httpd.server_close()
    for server in servers:
        server.close()
    for side, row in rows.items():
        result[side] = {k: statistics.median(v) for k, v in row.items()}
    same = {"serve_torch_vs_transformers_direct": ("forge_serve_torch", "transformers_direct"),
            "serve_llamacpp_vs_llamacpp_direct": ("forge_serve_llamacpp", "llamacpp_direct"),
            "serve_llamacpp_vs_serve_torch": ("forge_serve_llamacpp", "forge_serve_torch")}
    result["same_text"] = {name: texts[a] == texts[b] for name, (a, b) in same.items() if a in texts and b in texts}
    ratios = {"serve_torch_to_transformers_direct": ("forge_serve_torch", "transformers_direct"),
              "serve_llamacpp_to_llamacpp_direct": ("forge_serve_llamacpp", "llamacpp_direct"),
              "serve_torch_to_llamacpp_direct": ("forge_serve_torch", "llamacpp_direct")}
    for name, (a, b) in ratios.items():
        if a in result and b in result:
            result[f"{name}_tokens_per_s"] = result[a]["tokens_per_s"] / result[b]["tokens_per_s"]
            result[f"{name}_ttft"] = result[a]["ttft_s"] / result[b]["ttft_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="model dir or container (repeatable)")
    parser.add_argument("--smollm2", action="store_true", help="also SmolLM2-135M-Instruct from the packaged GGUF")
    parser.add_argument("--max-tokens", type=int, default=40, help="tokens per request (fits the default's 64-token context)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gguf-type", default="f16", help="the llama-cpp engine's GGUF type")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON here (atomically)")
    args = parser.parse_args()
    try:
        import llama_cpp
    except ImportError:
        llama_cpp = None
        print("llama-cpp-python is not installed: the llama.cpp rows are left out", file=sys.stderr)
    torch.set_num_threads(1)
    models = args.model or [str(ROOT / "models" / "trained")]
    results = {}
    for path in models:
        from forgelib.data.tasks import load_tasks

        prompts = [t["test"][0]["prompt"] for t in load_tasks(ROOT / "data").values()]
        name = str(Path(path).resolve().relative_to(ROOT)) if Path(path).resolve().is_relative_to(ROOT) else path
        results[name] = bench(path, prompts, args.max_tokens, args.repeats, args.gguf_type, llama_cpp)
    if args.smollm2:
        from forgelib.models.gguf import find_packaged_gguf, import_gguf

        torch.set_num_threads(2)
        with tempfile.TemporaryDirectory() as tmp:
            out = import_gguf(find_packaged_gguf(), Path(tmp) / "smollm2")
            prompts = ["def fibonacci(n):", "The capital of France is", "Write a haiku about the sea."]
            results["SmolLM2-135M-Instruct"] = bench(str(out), prompts, args.max_tokens, args.repeats, args.gguf_type,
                                                     llama_cpp)
    if args.json_out:
        write_json(args.json_out, results)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'model':32s} {'side':22s} {'TTFT ms':>8s} {'tok/s':>8s}")
    for name, r in results.items():
        for side in SIDES:
            if side in r:
                print(f"{name[-32:]:32s} {side:22s} {1000 * r[side]['ttft_s']:8.1f} {r[side]['tokens_per_s']:8.1f}")
        ratios = {k: v for k, v in r.items() if k.endswith(("_tokens_per_s", "_ttft"))}
        print(f"{'':32s} threads {r['threads']}; " + "; ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
        print(f"{'':32s} same text: {r['same_text']}")


if __name__ == "__main__":
    main()
