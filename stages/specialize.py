"""Stage `specialize`: prompt baking and Transformer² SVF experts on the trained model.

Reads params `specialize`; bakes a prompt into `models/trained/` (when it helps) and trains one SVF
expert per task family, a dispatcher and a few-shot mixing of them; writes `models/specialized/`
(the baked HF weights, with the experts in `svf_experts.safetensors` + `specialize.json` beside
them), caches the SVD in `checkpoints/specialize/` (persist: recomputed only when the weights
change), and writes `metrics/specialize.json` and TSV plots under `metrics/specialize/`.
"""

import argparse

from forgelib.config import load_section
from forgelib.runtime import PIECE_THREADS, stage
from forgelib.specialize.run import run_specialize


@stage(threads=PIECE_THREADS)
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--input", default="models/trained")
    parser.add_argument("--out", default="models/specialized")
    parser.add_argument("--svd", default="checkpoints/specialize")
    parser.add_argument("--metrics", default="metrics/specialize.json")
    parser.add_argument("--plots", default="metrics/specialize")
    args = parser.parse_args()
    cfg = load_section("specialize", args.params)
    run_specialize(cfg, data_dir=args.data, input_dir=args.input, out_dir=args.out, svd_dir=args.svd,
                   metrics_path=args.metrics, plots_dir=args.plots)
    return args.metrics


if __name__ == "__main__":
    main()
