"""The Forge loop under torchrun: 2 gloo processes on CPU reproduce the 1-process loss curve,
only rank 0 writes, and a 2-process run resumes from its checkpoint.

Tolerance: the 2-process gradient is the sum of two all-reduced partial gradients, so it is
added in another order than the 1-process backward pass (and the loss is scaled by the rank's
token share); float32 rounding then differs in the last bits and grows a little through AdamW
and Grokfast's amplification. RTOL bounds that drift over 10 steps; a real bug (per-rank loss
normalisation, a missing all-reduce, wrong sharding) moves the curve by far more than 1e-4.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from torch.testing import assert_close

from forgelib.configtools import from_dict
from forgelib.errors import ForgeError
from forgelib.train import forge_loop
from forgelib.train.config import TrainConfig

from conftest import tiny_model

RTOL = 1e-4
PARAMS = {"max_steps": 10, "batch_size": 16, "eval_every": 5, "log_every": 1, "checkpoint_every": 5,
          "eval_limit": 8, "grokfast": {"enabled": True, "schedule": {"enabled": True}},
          # rank-consistent controllers: the edge curriculum sees the gathered global batch
          "edge": {"enabled": True, "window": 16, "min_samples": 8, "update_every": 2},
          "geometry": {"enabled": True, "every": 5, "probe_size": 16}}
WORKER = Path(__file__).with_name("distributed_worker.py")


def loss_curve(metrics_dir: Path, name: str = "loss") -> list[float]:
    rows = (metrics_dir / "plots" / "metrics" / f"{name}.tsv").read_text().split("\n")[1:]
    return [float(r.split("\t")[-1]) for r in rows if r.strip()]


def torchrun(tmp: Path, params: dict, nproc: int = 2) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "params.json").write_text(json.dumps(params))
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(WORKER), str(tmp / "params.json"), str(tmp)]
    done = subprocess.run(cmd, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((tmp / "rank0" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tasks, tokenizer):
    tmp = tmp_path_factory.mktemp("dist")
    cfg = from_dict(TrainConfig, PARAMS, "train")
    one = forge_loop.train_model(tiny_model(tokenizer), tokenizer, tasks, cfg, out_dir=tmp / "one" / "model",
                                 checkpoint_dir=tmp / "one" / "ckpt", metrics_dir=tmp / "one" / "metrics")
    two = torchrun(tmp / "two", {**PARAMS, "distributed": {"nproc": 2}})
    return tmp, one, two


def test_two_processes_reproduce_the_one_process_loss_curve(runs):
    tmp, one, two = runs
    curve_1, curve_2 = loss_curve(tmp / "one" / "metrics"), loss_curve(tmp / "two" / "rank0" / "metrics")
    assert len(curve_1) == len(curve_2) == PARAMS["max_steps"]
    worst = max(abs(a - b) / abs(a) for a, b in zip(curve_1, curve_2))
    step_ms = [statistics.median(loss_curve(d, "step_time_ms")) for d in (tmp / "one" / "metrics",
                                                                          tmp / "two" / "rank0" / "metrics")]
    print(f"max relative loss difference 1 vs 2 processes: {worst:.2e}; median step time "
          f"{step_ms[0]:.1f} ms vs {step_ms[1]:.1f} ms")
    assert one["controllers"]["edge"] == two["controllers"]["edge"]
    assert_close(curve_2, curve_1, rtol=RTOL, atol=0)
    w1 = load_file(str(tmp / "one" / "model" / "model.safetensors"))
    w2 = load_file(str(tmp / "two" / "rank0" / "model" / "model.safetensors"))
    for name, tensor in w1.items():
        assert_close(w2[name], tensor, rtol=1e-3, atol=1e-5, msg=name)


def test_only_rank_0_writes(runs):
    tmp, _, _ = runs
    assert not (tmp / "two" / "rank1").exists()
    assert (tmp / "two" / "rank0" / "model" / "model.safetensors").is_file()
    assert sorted(p.name for p in (tmp / "two" / "ckpt").iterdir()) == ["identity.json", "step-00000005",
                                                                          "step-00000010"]


def test_two_processes_resume_from_a_checkpoint(runs):
    tmp, _, two = runs
    resumed_dir = tmp / "resumed"
    shutil.copytree(tmp / "two" / "ckpt", resumed_dir / "ckpt")
    shutil.rmtree(resumed_dir / "ckpt" / "step-00000010")  # as if killed between steps 5 and 10
    resumed = torchrun(resumed_dir, {**PARAMS, "distributed": {"nproc": 2}})
    assert resumed["resumed_from"] == 5
    full = load_file(str(tmp / "two" / "rank0" / "model" / "model.safetensors"))
    again = load_file(str(resumed_dir / "rank0" / "model" / "model.safetensors"))
    for name, tensor in full.items():
        assert_close(again[name], tensor, rtol=0, atol=0, msg=name)


def test_batch_size_must_split_evenly():
    with pytest.raises(ForgeError, match=r"train\.distributed\.nproc: expected a divisor of batch_size \(10\)"):
        from_dict(TrainConfig, {"batch_size": 10, "distributed": {"nproc": 4}}, "train")
