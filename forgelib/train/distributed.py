"""Data-parallel Forge training under ``torchrun``: launch, shard, synchronise.

``train.distributed.nproc: N > 1`` runs the loop in N processes (gloo backend, CPU). The stage
script stays ``python stages/train.py``; :func:`relaunch` re-executes it under
``python -m torch.distributed.run --standalone --nproc_per_node N`` (``sys.executable``, so the
project's Python), with :data:`MARKER` set in the environment so that the workers do not
relaunch again. Every rank then:

- samples the same global batch ``rows = stream.sample(step, batch_size, levels)`` and trains
  on ``rows[rank::N]`` (:func:`shard`; ``batch_size % N == 0`` is checked in the config);
- scales its answer loss by ``local answer tokens / global answer tokens`` (an all-reduced
  count), so each rank's loss is its share of the *global* per-token mean, and :func:`sum_grads`
  all-reduces the gradients with SUM: the sum of the ranks' gradients is the gradient of the
  1-process loss, up to float summation order (the per-rank mean of an unequal number of answer
  tokens, averaged over ranks, would not be);
- gathers the per-example statistics back into the global batch order (:func:`gather_stats`),
  so controllers that look at the batch (edge curriculum) see the 1-process view.

Only rank 0 evaluates, logs and writes; it broadcasts its evaluation (:func:`broadcast`) so that
every rank's ``on_eval`` hooks (λ schedule, grokking stage) take the same decision.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Sequence

import torch
import torch.distributed as dist

MARKER = "FORGE_UNDER_TORCHRUN"
"""Set in the workers' environment by :func:`relaunch`; a process that sees it does not relaunch."""


def relaunch(nproc: int, argv: Sequence[str], extra_args: Sequence[str] = ()) -> int:
    """Run ``argv`` (a script and its arguments) under torchrun with ``nproc`` local processes
    and return its exit code. ``extra_args`` go to torchrun itself (e.g. ``--nnodes``). Each rank
    gets ``FORGE_NUM_THREADS`` = this process's threads // ``nproc`` (>= 1) unless it is set."""
    from forgelib.runtime import torch_threads

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           *extra_args, *argv]
    env = {**os.environ, MARKER: "1"}
    # the stage's thread count is shared among its ranks (2 threads, 2 ranks: 1 each), unless set
    env.setdefault("FORGE_NUM_THREADS", str(max(1, torch_threads() // nproc)))
    return subprocess.run(cmd, env=env).returncode


def should_relaunch(nproc: int) -> bool:
    """True in the stage process that must start torchrun (N > 1 and not already a worker)."""
    return nproc > 1 and MARKER not in os.environ and "LOCAL_RANK" not in os.environ


def init() -> tuple[int, int]:
    """Join the process group torchrun described in the environment (gloo); (rank, world size).
    Outside torchrun: (0, 1) and nothing is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    dist.init_process_group(backend="gloo")
    return dist.get_rank(), dist.get_world_size()


def world() -> tuple[int, int]:
    """(rank, world size) of an initialised process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(rows: list, rank: int, world_size: int) -> list:
    """This rank's rows of the global batch: a strided, deterministic split."""
    return rows[rank::world_size]


def global_count(n: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of a count tensor (a copy; ``n`` itself is unchanged)."""
    total = n.detach().clone()
    if world()[1] > 1:
        dist.all_reduce(total)
    return total


def sum_grads(params: Sequence[torch.Tensor]) -> None:
    """All-reduce (SUM) the gradients of ``params`` in one flat buffer. Every rank runs the
    same code on the same model, so the same parameters have a gradient on every rank."""
    if world()[1] <= 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def gather_rows(local: torch.Tensor, world_size: int) -> torch.Tensor:
    """Per-example values of every rank's shard, back in the global batch order. With the
    strided split, global row ``k * N + r`` is row ``k`` of rank ``r``; shards have equal size."""
    if world_size <= 1:
        return local
    parts = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(parts, local.contiguous())
    return torch.stack(parts, dim=0).transpose(0, 1).reshape(-1)  # (N, B/N) -> (B/N, N) -> (B,)


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if world()[1] <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
