"""Stage `deploy`: ship the final container as itself, an HF directory and a GGUF, in `dist/`.

Reads params `deploy`; copies the container, exports it with `forge export`'s code (decoded
weights: the codecs have no GGUF type), checks both exports against the container's model on the
validation rows (transformers reads them back), writes the model card `dist/README.md` and
`metrics/deploy.json` (bytes per artifact, max |logit diff|, top-1 agreement).
"""

import argparse

from forgelib.config import load_section
from forgelib.export.deploy import deploy
from forgelib.runtime import stage


@stage
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="models/compressed/final")
    parser.add_argument("--data", default="data")
    parser.add_argument("--out", default="dist")
    parser.add_argument("--metrics", default="metrics/deploy.json")
    args = parser.parse_args()
    deploy(load_section("deploy", args.params), model_path=args.model, data_dir=args.data, out_dir=args.out,
           metrics_path=args.metrics)
    return args.metrics


if __name__ == "__main__":
    main()
