"""Stage `train`: the Forge training loop (Grokfast, curriculum, geometry, self-model, dreams).

Reads params `train`; trains `models/quietstar/` (the evolved model, unless quietstar.enabled) into `models/trained/`; checkpoints to
`checkpoints/train/` (persist: a killed run resumes); writes `metrics/train.json` (test mean of
the trained model and of its input) and dvclive curves under `metrics/train/`.

With `train.distributed.nproc: N > 1` the script re-executes itself under
`python -m torch.distributed.run --standalone --nproc_per_node N` (the same Python), so the DVC
command stays `python stages/train.py`; only rank 0 writes outputs.
"""

import argparse
import sys

from forgelib.config import load_section
from forgelib.errors import ForgeError
from forgelib.runtime import stage
from forgelib.train import distributed
from forgelib.train.run import run_train


@stage
def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--input", default="models/quietstar")
    parser.add_argument("--out", default="models/trained")
    parser.add_argument("--checkpoints", default="checkpoints/train")
    parser.add_argument("--metrics", default="metrics/train.json")
    parser.add_argument("--plots", default="metrics/train")
    args = parser.parse_args()
    cfg = load_section("train", args.params)
    if distributed.should_relaunch(cfg.distributed.nproc):
        code = distributed.relaunch(cfg.distributed.nproc, [__file__, *sys.argv[1:]])
        if code != 0:
            raise ForgeError(f"torchrun with train.distributed.nproc={cfg.distributed.nproc} failed (exit code {code})")
        return args.metrics
    rank, _ = distributed.init()
    try:
        run_train(cfg, data_dir=args.data, input_dir=args.input, out_dir=args.out,
                  checkpoint_dir=args.checkpoints, metrics_dir=args.plots, metrics_path=args.metrics)
    finally:
        distributed.shutdown()
    return args.metrics if rank == 0 else None


if __name__ == "__main__":
    main()
