"""Stage `compress`: stage 1, then stage 2 on stage 1's output, a codec per tensor group from params
`compress` (the embedded default: int8 attention, healed BitNet 1.58 MLP and 6-bit tables, then
GPTQ 4-bit attention).

Reads params `compress`; compresses `models/specialized/` into `models/compressed/{stage1,final}/`
(one safetensors container each, with codec metadata; the SVF experts are refit on each container's
decoded weights and shipped only if they beat the plain model on validation); writes `metrics/compress.json`: real
container bytes, bits per parameter, fractions of fp32/bf16, test exact match, retention,
perplexity, per-codec SNR, encode/decode times.
"""

import argparse

from forgelib.compress.run import run_compress
from forgelib.config import load_section
from forgelib.runtime import stage


@stage
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--input", default="models/specialized")
    parser.add_argument("--out", default="models/compressed")
    parser.add_argument("--metrics", default="metrics/compress.json")
    args = parser.parse_args()
    run_compress(load_section("compress", args.params), data_dir=args.data, input_dir=args.input,
                 out_dir=args.out, metrics_path=args.metrics)
    return args.metrics


if __name__ == "__main__":
    main()
