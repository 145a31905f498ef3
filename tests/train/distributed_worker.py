"""One rank of tests/train/test_distributed.py, started by torchrun: the tiny fixtures of
conftest.py, then the Forge loop. Usage: distributed_worker.py PARAMS_JSON OUT_DIR.
Model and metrics go to OUT_DIR/rank<r>/ (only rank 0's may exist); checkpoints to the shared
OUT_DIR/ckpt; rank 0 writes the returned metrics to OUT_DIR/rank0/metrics.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from forgelib.configtools import from_dict
from forgelib.data.tokenizer import build_char_tokenizer
from forgelib.train import distributed
from forgelib.train.config import TrainConfig
from forgelib.train.forge_loop import train_model

from conftest import tiny_model, tiny_task


def main() -> None:
    params, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    torch.set_num_threads(1)
    rank, _ = distributed.init()
    tokenizer = build_char_tokenizer()
    tasks = {name: tiny_task(name) for name in ("mod_add", "reverse", "parity")}
    mine = out / f"rank{rank}"
    try:
        metrics = train_model(tiny_model(tokenizer), tokenizer, tasks, from_dict(TrainConfig, params, "train"),
                              out_dir=mine / "model", checkpoint_dir=out / "ckpt", metrics_dir=mine / "metrics")
    finally:
        distributed.shutdown()
    if rank == 0:
        (mine / "metrics.json").write_text(json.dumps(metrics, default=str))


if __name__ == "__main__":
    main()
