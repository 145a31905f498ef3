"""llama.cpp (the client GGUF users run) against Forge on SmolLM2-135M-Instruct, in one run:

1. Forge's exported GGUF loads in llama.cpp and decodes the same greedy text (up to <eos>) as
   Forge's model (transformers fp32) on fixed prompts;
2. tokens/s of greedy decoding: llama.cpp on the exported F16 GGUF and on the packaged Q4_1 GGUF,
   against Forge's serving path (`forgelib.serve.ModelServer.generate`, transformers fp32 with
   the KV cache), same prompts, same number of tokens, same thread count.

    python bench/llamacpp.py [--json] [--tokens 64] [--threads 2]

Needs `llama-cpp-python` (no wheel: `pip install llama-cpp-python` builds llama.cpp from source,
about 7 minutes here); it is not part of `make venv`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forgelib.export.gguf import write_gguf  # noqa: E402
from forgelib.models.gguf import find_packaged_gguf, import_gguf  # noqa: E402
from forgelib.models.hf import load_model  # noqa: E402
from forgelib.serve import ModelServer, Options  # noqa: E402

PROMPTS = ["def fibonacci(n):", "The capital of France is", "Write a haiku about the sea.", "import numpy as np\n"]


def forge_decode(server: ModelServer, prompt: str, tokens: int, ignore_eos: bool = True) -> tuple[list[int], float]:
    ids = server.tokenizer(prompt)["input_ids"]
    opts = Options(ids, tokens, 0.0, 0, [], False, ignore_eos=ignore_eos)
    started = time.perf_counter()
    pieces = list(server.generate(opts))
    seconds = time.perf_counter() - started
    text = "".join(p.text for p in pieces)
    return server.tokenizer(text, add_special_tokens=False)["input_ids"], tokens / seconds


def llama_decode(llm, prompt: str, tokens: int, stop_at_eos: bool = False) -> tuple[list[int], float]:
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    llm.reset()
    out, started = [], time.perf_counter()
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        if stop_at_eos and token == llm.token_eos():
            break
        out.append(token)
        if len(out) == tokens:
            break
    return out, tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from llama_cpp import Llama

    torch.set_num_threads(args.threads)
    packaged = find_packaged_gguf()
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = import_gguf(packaged, Path(tmp) / "smollm2")
        model, tokenizer = load_model(hf_dir)
        exported = Path(tmp) / "smollm2-f16.gguf"
        write_gguf(model, tokenizer, exported, gguf_type="f16", name="smollm2-forge")
        server = ModelServer(model, tokenizer, model_id="bench")
        runs = {"forge_serve_fp32": [], "llama_cpp_exported_f16": [], "llama_cpp_packaged": []}
        agree = []
        llms = {name: Llama(model_path=str(path), n_ctx=512, n_threads=args.threads, verbose=False)
                for name, path in (("llama_cpp_exported_f16", exported), ("llama_cpp_packaged", packaged))}
        for prompt in PROMPTS:
            forge_ids, tps = forge_decode(server, prompt, args.tokens)
            runs["forge_serve_fp32"].append(tps)
            for name, llm in llms.items():
                ids, tps = llama_decode(llm, prompt, args.tokens)
                runs[name].append(tps)
                if name == "llama_cpp_exported_f16":  # greedy text up to <eos> (or the token budget)
                    text = llm.detokenize(llama_decode(llm, prompt, args.tokens, stop_at_eos=True)[0]).decode(errors="replace")
                    forge_text = tokenizer.decode(forge_decode(server, prompt, args.tokens, ignore_eos=False)[0])
                    same = 0
                    while same < min(len(text), len(forge_text)) and text[same] == forge_text[same]:
                        same += 1
                    agree.append({"prompt": prompt, "common_prefix_chars": same,
                                  "forge_chars": len(forge_text), "identical": text == forge_text})
        result = {
            "tokens": args.tokens, "threads": args.threads,
            "tokens_per_s": {k: statistics.median(v) for k, v in runs.items()},
            "exported_gguf_bytes": exported.stat().st_size, "packaged_gguf": packaged.name,
            "greedy_agreement_exported_vs_forge": agree,
        }
    tps = result["tokens_per_s"]
    result["forge_to_llama_cpp_f16"] = tps["forge_serve_fp32"] / tps["llama_cpp_exported_f16"]
    result["forge_to_llama_cpp_packaged"] = tps["forge_serve_fp32"] / tps["llama_cpp_packaged"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for name, value in tps.items():
        print(f"{name:26s} {value:8.1f} tokens/s")
    print(f"forge / llama.cpp (exported F16) = {result['forge_to_llama_cpp_f16']:.2f}; "
          f"forge / llama.cpp (packaged) = {result['forge_to_llama_cpp_packaged']:.2f}")
    for row in agree:
        print(f"greedy text identical={row['identical']} common prefix {row['common_prefix_chars']}/{row['forge_chars']} chars: {row['prompt']!r}")


if __name__ == "__main__":
    main()
