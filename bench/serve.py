"""Time to first token and tokens/s of `forge serve`, side by side with the same model called
directly through transformers (`model.generate`, greedy, KV cache), in one run.

    python bench/serve.py                       # the embedded default's models/trained
    python bench/serve.py --smollm2             # also SmolLM2-135M-Instruct (converted from the packaged GGUF)
    python bench/serve.py --model DIR --json

The server runs in-process on a loopback port and is driven by the official `openai` client,
streaming, so time to first token is measured where a client sees it (HTTP, JSON, SSE included).
Both sides generate the same greedy tokens (asserted): the ratio isolates the server's overhead.
llama.cpp is not in this comparison: llama-cpp-python has no wheel here (see the README).
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
from forgelib.serve import ModelServer, make_server  # noqa: E402


def direct(model, tokenizer, prompt: str, max_tokens: int) -> tuple[float, float, str]:
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


def served(api, model_id: str, prompt: str, max_tokens: int) -> tuple[float, str, float]:
    """(seconds to first token, text, total seconds) of one streamed completion."""
    started = time.perf_counter()
    first, pieces = None, []
    for chunk in api.completions.create(model=model_id, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                        stream=True, extra_body={"ignore_eos": True}):
        text = chunk.choices[0].text
        if text and first is None:
            first = time.perf_counter() - started
        pieces.append(text)
    return first, "".join(pieces), time.perf_counter() - started


def bench(path: str, prompts: list[str], max_tokens: int, repeats: int) -> dict:
    import openai

    model, tokenizer = load_model_any(path)
    server = ModelServer(model, tokenizer, model_id="bench")
    httpd = make_server(server, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", api_key="x", max_retries=0)
    rows = {"direct": {"ttft_s": [], "tokens_per_s": []}, "forge_serve": {"ttft_s": [], "tokens_per_s": []}}
    same = True
    for _ in range(repeats):
        for prompt in prompts:
            # both sides decode exactly max_tokens tokens (past <eos>), greedy
            ttft, text, total = served(api, "bench", prompt, max_tokens)
            d_ttft, d_tps, d_text = direct(model, tokenizer, prompt, max_tokens)
            same &= d_text == text
            rows["forge_serve"]["ttft_s"].append(ttft)
            rows["forge_serve"]["tokens_per_s"].append((max_tokens - 1) / max(total - ttft, 1e-9))
            rows["direct"]["ttft_s"].append(d_ttft)
            rows["direct"]["tokens_per_s"].append(d_tps)
    httpd.shutdown()
    out = {side: {k: statistics.median(v) for k, v in r.items()} for side, r in rows.items()}
    out["serve_to_direct_tokens_per_s"] = out["forge_serve"]["tokens_per_s"] / out["direct"]["tokens_per_s"]
    out["same_text"] = bool(same)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="model dir or container (repeatable)")
    parser.add_argument("--smollm2", action="store_true", help="also SmolLM2-135M-Instruct from the packaged GGUF")
    parser.add_argument("--max-tokens", type=int, default=40, help="tokens per request (fits the default's 64-token context)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = args.model or [str(ROOT / "models" / "trained")]
    results = {}
    for path in models:
        from forgelib.data.tasks import load_tasks

        prompts = [t["test"][0]["prompt"] for t in load_tasks(ROOT / "data").values()]
        results[path] = bench(path, prompts, args.max_tokens, args.repeats)
    if args.smollm2:
        from forgelib.models.gguf import find_packaged_gguf, import_gguf

        torch.set_num_threads(2)
        with tempfile.TemporaryDirectory() as tmp:
            out = import_gguf(find_packaged_gguf(), Path(tmp) / "smollm2")
            prompts = ["def fibonacci(n):", "The capital of France is", "Write a haiku about the sea."]
            results["SmolLM2-135M-Instruct"] = bench(str(out), prompts, args.max_tokens, args.repeats)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'model':40s} {'side':12s} {'TTFT ms':>8s} {'tok/s':>8s}")
    for name, r in results.items():
        for side in ("direct", "forge_serve"):
            print(f"{name[-40:]:40s} {side:12s} {1000 * r[side]['ttft_s']:8.1f} {r[side]['tokens_per_s']:8.1f}")
        print(f"{'':40s} serve/direct tokens/s = {r['serve_to_direct_tokens_per_s']:.2f}  same text: {r['same_text']}")


if __name__ == "__main__":
    main()
