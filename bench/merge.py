"""Benchmark the streaming merge engine: peak memory against one model's size, and throughput.

Builds three related random Llama models of about ``--mb`` MB each (fp32; hidden 256, MLP 1024,
``--vocab`` rows of untied embeddings and lm_head, as many layers as the size allows), then
merges them in a fresh subprocess (``--method``; the first model is the base for methods that
need one). The peak is
the subprocess's resident-set high-water mark (``VmHWM``, reset after imports through
``/proc/self/clear_refs``) minus its resident set before the merge, so it counts everything the
merge itself touches: input tensors, intermediates, file pages and the writer.

    python bench/merge.py --mb 64 --method ties
    python bench/merge.py --mb 128 --vocab 32768 --method ties   # embeddings 17% of the model

Target (issue 3): peak < 2x one model's size. Row-block methods (linear, task arithmetic, DARE,
DELLA) stay near the block size; TIES, Breadcrumbs, SLERP and Model Stock hold their largest
tensor whole, so their ratio grows with the embedding's share of the model (``--vocab``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIDDEN = 256  # 4 MiB of fp32 per layer: attention 4h^2 + MLP 3*h*4h


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(spec: str) -> None:
    """Runs in the subprocess: merge and report time and the resident-set growth as JSON."""
    import torch

    from forgelib.merge.engine import merge_recipe

    torch.set_num_threads(1)
    args = json.loads(spec)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    before = _status("VmRSS")
    start = time.perf_counter()
    merge_recipe(args["recipe"], args["out"])
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_delta": _status("VmHWM") - before}))


def build(root: Path, mb: float, vocab: int) -> list[Path]:
    import torch

    from forgelib.models.build import build_llama, llama_config

    embeddings_mb = 2 * vocab * HIDDEN * 4 / 2**20
    layers = max(1, round((mb - embeddings_mb) / 4))
    config = llama_config(vocab_size=vocab, hidden_size=HIDDEN, num_layers=layers, num_heads=4)
    paths = []
    for seed in range(3):
        model = build_llama(config, seed=0)
        with torch.no_grad():  # three relatives of one ancestor, as merges expect
            gen = torch.Generator().manual_seed(seed)
            for p in model.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
        paths.append(root / f"model{seed}")
        model.save_pretrained(paths[-1], safe_serialization=True)
    return paths


def recipe(method: str, paths: list[Path]) -> dict:
    from forgelib.merge.methods.registry import get_method

    spec = get_method(method)
    if spec.base == "none":
        return {"merge_method": method,
                "models": [{"model": str(p), "parameters": {"weight": 1 / 3}} for p in paths]}
    names = {p.name for p in spec.model_params}
    params = {k: 0.5 for k in ("weight", "density") if k in names}
    others = paths[1:2] if spec.max_models == 1 else paths[1:]
    out = {"merge_method": method, "base_model": str(paths[0]),
           "models": [{"model": str(p), **({"parameters": params} if params else {})}
                      for p in others]}
    if method == "slerp":
        out["parameters"] = {"t": 0.5}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=64, help="approximate size of each model in MB")
    from forgelib.merge.methods.registry import REGISTRY

    methods = [m for m in REGISTRY if m != "passthrough"]  # passthrough takes one model per slice
    parser.add_argument("--method", default="ties", choices=methods, help="registered merge method")
    parser.add_argument("--vocab", type=int, default=4096, help="vocabulary rows (embedding size)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    with tempfile.TemporaryDirectory() as tmp:
        paths = build(Path(tmp), args.mb, args.vocab)
        size = (paths[0] / "model.safetensors").stat().st_size
        spec = json.dumps({"recipe": recipe(args.method, paths), "out": str(Path(tmp) / "merged")})
        repo = Path(__file__).resolve().parents[1]
        result = subprocess.run([sys.executable, __file__, "--child", spec], check=True,
                                capture_output=True, text=True, cwd=repo)
        stats = json.loads(result.stdout.strip().splitlines()[-1])
    mib = 1024 * 1024
    read = 3 * size / mib
    largest = args.vocab * HIDDEN * 4
    print(f"method {args.method}: 3 models x {size / mib:.1f} MiB, largest tensor "
          f"{largest / mib:.0f} MiB ({largest / size:.0%} of a model)")
    print(f"peak memory of the merge: {stats['peak_delta'] / mib:.1f} MiB = "
          f"{stats['peak_delta'] / size:.2f}x one model (target < 2x)")
    print(f"time {stats['seconds']:.2f} s, throughput {read / stats['seconds']:.1f} MiB/s of input "
          f"({read:.0f} MiB read)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
