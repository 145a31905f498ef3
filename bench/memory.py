"""The surprise-gated memory's control arms on key-value recall beyond the context window.

Runs :func:`forgelib.agents.memory_arms.run_memory_arms` on a Hugging Face model directory (the
embedded default's ``models/trained`` by default) and prints the result: per seed, a ~1-minute
fine-tune of a copy of the model, then test-split episodes at each distance with the memory
``on`` (surprise-gated writes), ``off`` (no writes), ``write_all`` (every fact, same slots),
``random_writes`` (same number of writes) and ``full_attention`` where the fact fits in the
model's positions. Everything is computed on the spot; nothing is read from a file.

    python bench/memory.py --json                      # 3 seeds, distances 16 48 128 512 (~6 min)
    python bench/memory.py --seeds 0 --episodes 100    # a quicker look
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/trained", help="HF model directory to fine-tune a copy of")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--distances", type=int, nargs="+", default=None, help="default: 16 48 128 512")
    parser.add_argument("--stream-chars", type=int, default=None, help="stream length (default 600)")
    parser.add_argument("--episodes", type=int, default=None, help="test episodes per distance and seed")
    parser.add_argument("--steps", type=int, default=None, help="fine-tune steps per seed")
    parser.add_argument("--json", action="store_true", help="print the whole result object as JSON")
    args = parser.parse_args(argv)

    from forgelib.agents.memory_arms import MemoryArmsSettings, run_memory_arms
    from forgelib.errors import ForgeError
    from forgelib.runtime import configure_torch

    configure_torch()
    overrides = {"distances": tuple(args.distances) if args.distances else None,
                 "episodes_per_distance": args.episodes, "finetune_steps": args.steps,
                 "stream_chars": args.stream_chars}
    started = time.perf_counter()
    try:
        settings = MemoryArmsSettings(**{k: v for k, v in overrides.items() if v is not None})
        out = run_memory_arms(args.model, seeds=tuple(args.seeds), settings=settings)
    except ForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"headline (distances {out['headline_distances']}, mean of {len(args.seeds)} seeds): "
          f"on {out['on']:.3f} (std {out['std']:.3f})  off {out['off']:.3f}  "
          f"write_all {out['write_all']:.3f}  random_writes {out['random_writes']:.3f}")
    print(f"{'distance':>8} {'on':>6} {'off':>6} {'w_all':>6} {'random':>6} {'full':>6}")
    for distance, cell in out["by_distance"].items():
        full = f"{cell['full_attention']:.3f}" if "full_attention" in cell else "-"
        print(f"{distance:>8} {cell['on']:6.3f} {cell['off']:6.3f} {cell['write_all']:6.3f} "
              f"{cell['random_writes']:6.3f} {full:>6}")
    print(f"{out['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
