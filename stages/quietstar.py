"""Stage `quietstar`: Quiet-STaR thought training on a serial-computation task, with its control arms.

Reads params `quietstar`; trains the arms from `models/evolved/` and writes the seed-0 thinking
model to `models/thinking/` (HF weights with the thought tokens, `mixing_head.safetensors`,
`quietstar.json`), `metrics/quietstar.json` (sft, pause, thoughts and random_thoughts over the
seeds) and per-arm loss curves under `metrics/quietstar/`. `models/quietstar/` is what `train`
continues from: the thinking model's weights with `quietstar.enabled: true`, else an unchanged
copy of the input (the default: thoughts do not pay here, see the metrics).
"""

import argparse

from forgelib.config import load_section
from forgelib.quietstar.run import run_quietstar
from forgelib.runtime import PIECE_THREADS, stage


@stage(threads=PIECE_THREADS)
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--input", default="models/evolved")
    parser.add_argument("--out", default="models/quietstar")
    parser.add_argument("--thinking", default="models/thinking")
    parser.add_argument("--metrics", default="metrics/quietstar.json")
    parser.add_argument("--plots", default="metrics/quietstar")
    args = parser.parse_args()
    cfg = load_section("quietstar", args.params)
    run_quietstar(cfg, data_dir=args.data, input_dir=args.input, out_dir=args.out, thinking_dir=args.thinking,
                  metrics_path=args.metrics, plots_dir=args.plots)
    return args.metrics


if __name__ == "__main__":
    main()
