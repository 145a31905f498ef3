"""Codec benchmark: bits per weight vs SNR (and task retention) at several settings, side by side
with the papers' published operating points.

    python bench/compress.py                                # seeded Gaussian 256x256 matrix
    python bench/compress.py --model-dir models/trained     # the model's attention + MLP weights
    python bench/compress.py --model-dir M --data-dir data  # + retention on the test split
    python bench/compress.py --model-dir models/evolved --match 'layers\.5\.mlp\.up_proj' --codecs vptq
                                                            # one real tensor, one codec family

The last form is how the SmolLM2 profile's codec settings were chosen (encode seconds per
setting on a 576x1536 SmolLM2 matrix, with the SNR each buys).

Bits per weight are measured from payload bytes (codebooks, scales and seeds included; the
container header is not, it is per model, not per codec). SNR = 10 log10(sum w^2 / sum (w - w_hat)^2)
over all weights. Retention applies one codec setting to every attention and MLP weight (the
rest stays fp32) and divides the test exact-match mean by the uncompressed model's. With
``--data-dir`` VPTQ also gets calibration Hessians from the training split.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from forgelib.compress.codecs.registry import get_codec, make_config
from forgelib.compress.codecs.seedlm import SeedLMConfig, search, seed_basis

SETTINGS = [
    ("fp16", {}), ("int8", {}),
    ("bitnet158", {"packing": "trit5"}), ("bitnet158", {"packing": "2bit"}),
    ("seedlm", {"C": 8, "P": 3, "max_seeds": 256}), ("seedlm", {"C": 8, "P": 3, "max_seeds": 4096}),
    ("seedlm", {"C": 8, "P": 3, "max_seeds": 65535}), ("seedlm", {"C": 12, "P": 4, "max_seeds": 4096}),
    ("seedlm", {"C": 12, "P": 4, "max_seeds": 65535}),
    ("vptq", {"v": 4, "k": 256, "k_res": 256}), ("vptq", {"v": 4, "k": 256, "k_res": 16}),
    ("vptq", {"v": 4, "k": 256}), ("vptq", {"v": 6, "k": 4096}), ("vptq", {"v": 8, "k": 256}),
    ("vptq", {"v": 8, "k": 16, "codebook_bits": 8}),
    # the SmolLM2 profile's fast settings (8 k-means iterations) and the one it rejected
    ("vptq", {"v": 2, "k": 64, "k_res": 16, "kmeans_iters": 8, "codebook_bits": 8}),
    ("vptq", {"v": 4, "k": 64, "k_res": 16, "kmeans_iters": 8, "codebook_bits": 8}),
    ("hyperfn", {"n_points": 4096}), ("hyperfn", {"n_points": 1024}), ("hyperfn", {"n_points": 256}),
    ("hyperfn", {"n_points": 64}),
]
# (method, published figure, what it means in bits per weight, our setting closest to it)
PUBLISHED = [
    ("BitNet b1.58 (arXiv 2402.17764)", "1.58 b/w (log2 3)", 1.58, ("bitnet158", {"packing": "trit5"})),
    ("VPTQ (arXiv 2409.17066)", "2.02 b/w, Llama-2-7B", 2.02, ("vptq", {"v": 4, "k": 256})),
    ("SeedLM (arXiv 2410.10714)", "4 b/w (C=8,P=3,K=16)", 4.0, ("seedlm", {"C": 8, "P": 3, "max_seeds": 65535})),
    ("SeedLM (arXiv 2410.10714)", "3 b/w (C=12,P=4,K=16)", 3.0, ("seedlm", {"C": 12, "P": 4, "max_seeds": 65535})),
    ("Hyper-Compression (arXiv 2409.00592)", "2.6x vs fp16, Llama-2-7B", 16 / 2.6, ("hyperfn", {"n_points": 1024})),
]


def weights_to_test(model_dir: str | None, rows: int, cols: int) -> tuple[dict[str, torch.Tensor], object]:
    if model_dir is None:
        g = torch.Generator().manual_seed(0)
        return {"gaussian": torch.randn(rows, cols, generator=g) * 0.02}, None
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    weights = {n: p.detach() for n, p in model.named_parameters()
               if p.dim() == 2 and (".self_attn." in n or ".mlp." in n)}
    return weights, model


def run_setting(codec_name: str, settings: dict, weights: dict[str, torch.Tensor],
                hessians: dict[str, torch.Tensor]) -> dict:
    codec, config = get_codec(codec_name), make_config(codec_name, settings)
    signal = noise = payload_bytes = encode_s = decode_s = 0.0
    decoded = {}
    for name, w in weights.items():
        start = time.perf_counter()
        payload = (codec.encode(w, config, hessian=hessians.get(name)) if codec.needs_hessian
                   else codec.encode(w, config))
        mid = time.perf_counter()
        out = codec.decode(payload)
        decode_s += time.perf_counter() - mid
        encode_s += mid - start
        signal += float(w.pow(2).sum())
        noise += float((w - out).pow(2).sum())
        payload_bytes += payload.nbytes()
        decoded[name] = out
    n = sum(w.numel() for w in weights.values())
    return {"bits": 8 * payload_bytes / n, "snr": 10 * math.log10(signal / noise) if noise else math.inf,
            "encode_s": encode_s, "decode_s": decode_s, "decoded": decoded}


def seedlm_throughput(weights: dict[str, torch.Tensor], max_blocks: int = 2048) -> list[tuple[int, float]]:
    flat = torch.cat([w.reshape(-1) for w in weights.values()])
    blocks = flat[: (flat.numel() // 8) * 8].reshape(-1, 8)[:max_blocks]
    rates = []
    for seeds in (256, 4096, 65535):
        config = SeedLMConfig(max_seeds=seeds)
        seed_basis(config.C, config.P, config.K, seeds)  # cache built outside the timing
        start = time.perf_counter()
        search(blocks, config, exp_lo=-30)
        rates.append((seeds, blocks.shape[0] / (time.perf_counter() - start)))
    return rates


def make_retention(model, data_dir: str, model_dir: str, limit: int | None):
    """Returns (evaluate(decoded weights) -> retention, calibration Hessians) using the spine."""
    from forgelib.compress.hessian import collect_hessians
    from forgelib.data.batching import collate, encode
    from forgelib.data.tasks import load_tasks
    from forgelib.eval.evaluate import evaluate_model
    from forgelib.models.hf import load_model

    _, tokenizer = load_model(model_dir)
    tasks = load_tasks(data_dir)
    base = evaluate_model(model, tokenizer, tasks, limit=limit)["mean"]
    rows = [encode(tokenizer, r["prompt"], r["answer"]) for split in tasks.values() for r in split["train"].select(range(64))]
    batches = [collate(rows[i : i + 32], tokenizer.pad_token_id) for i in range(0, len(rows), 32)]
    names = {n for n, p in model.named_parameters() if p.dim() == 2 and (".self_attn." in n or ".mlp." in n)}
    hessians = collect_hessians(model, batches, names, max_batches=len(batches))
    original = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}

    def retention(decoded: dict[str, torch.Tensor]) -> float:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, w in decoded.items():
                params[n].copy_(w)
            mean = evaluate_model(model, tokenizer, tasks, limit=limit)["mean"]
            for n, w in original.items():
                params[n].copy_(w)
        return mean / base if base else float("nan")

    return retention, hessians, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="a trained HF model directory (default: a Gaussian matrix)")
    parser.add_argument("--data-dir", help="task data (data/tasks) for retention; needs --model-dir")
    parser.add_argument("--limit", type=int, default=None, help="test examples per task for retention")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--cols", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--match", help="with --model-dir: only weights whose name matches this regex")
    parser.add_argument("--codecs", help="comma list: only these codecs' settings (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    weights, model = weights_to_test(args.model_dir, args.rows, args.cols)
    if args.match:
        import re

        weights = {n: w for n, w in weights.items() if re.search(args.match, n)}
        if not weights:
            parser.error(f"--match {args.match!r} selects no attention/MLP weight")
    wanted = set(args.codecs.split(",")) if args.codecs else None
    retention, hessians, base = None, {}, None
    if args.data_dir:
        if model is None:
            parser.error("--data-dir needs --model-dir")
        retention, hessians, base = make_retention(model, args.data_dir, args.model_dir, args.limit)
    n = sum(w.numel() for w in weights.values())
    print(f"weights: {args.model_dir or f'seeded N(0, 0.02^2) {args.rows}x{args.cols}'} "
          f"({len(weights)} tensors, {n} values), torch threads {args.threads}"
          + (f", base test mean {base:.4f}, Hessians {len(hessians)}" if retention else ""))
    print(f"{'codec':10} {'settings':38} {'bits/w':>7} {'SNR dB':>7} {'enc s':>7} {'dec s':>6}"
          + (f" {'retention':>9}" if retention else ""))
    results = {}
    for codec_name, settings in SETTINGS:
        if wanted is not None and codec_name not in wanted:
            continue
        r = run_setting(codec_name, settings, weights, hessians)
        results[(codec_name, str(settings))] = r
        line = (f"{codec_name:10} {str(settings):38} {r['bits']:7.3f} {r['snr']:7.2f} "
                f"{r['encode_s']:7.2f} {r['decode_s']:6.2f}")
        if retention:
            line += f" {retention(r['decoded']):9.3f}"
        print(line, flush=True)

    if wanted is not None:
        return
    print("\nSeedLM search throughput (C=8, P=3, K=16, one thread per --threads):")
    for seeds, rate in seedlm_throughput(weights):
        print(f"  {seeds:6d} seeds: {rate:9.1f} blocks/s  ({rate * seeds / 1e6:.1f}M block-seed pairs/s)")

    print("\nPublished operating points vs ours (measured above on these weights):")
    for method, claim, bits, (codec_name, settings) in PUBLISHED:
        r = results[(codec_name, str(settings))]
        print(f"  {method:38} paper {claim:26} = {bits:5.2f} b/w | ours {codec_name} {settings}: "
              f"{r['bits']:.2f} b/w ({16 / r['bits']:.2f}x vs fp16), SNR {r['snr']:.2f} dB")


if __name__ == "__main__":
    main()
