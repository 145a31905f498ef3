"""Where evomerge candidates are merged and scored: ``serial``, ``process`` or ``ray``.

A backend gets a generation's *uncached* candidates (recipe hash, recipe, merge seed) and yields
``(hash, fitness)`` as each is scored. The search itself (selection, breeding, the cache, the
checkpoint) stays in the driver, so a backend can only change *where* a candidate runs, never its
result: every candidate is merged from its recipe with its own ``merge_seed`` (the drop masks of
dare/della), and every worker runs torch with the driver's thread count (``FORGE_NUM_THREADS``, else
1 in the evomerge stage and ``forge evo``: :data:`forgelib.runtime.PIECE_THREADS`) and the driver's
working directory (recipes hold parent paths relative to it).

Workers receive the fitness callable itself, so it must be picklable (a module-level class like
:class:`forgelib.merge.fitness.ValidationFitness`, not a closure) for ``process``; Ray pickles
closures too. A candidate that fails on a worker (an exception, a killed worker) is retried
(``process``: once; ``ray``: ``evomerge.ray.max_retries`` times) and then stops the search with a
:class:`ForgeError` naming its recipe hash: a failure is never scored as a bad fitness.

Ray: ``evomerge.ray.address`` joins an existing cluster; otherwise a local instance with
``evomerge.ray.num_cpus`` CPUs is started, with its session, logs, sockets and auth token in a
short temp dir under :func:`tempfile.gettempdir` (Unix sockets cap paths at ~107 characters), no
dashboard, worker output not forwarded; it is shut down when the search ends (the dir is removed
when the process exits).
"""

from __future__ import annotations

import atexit
import os
import pickle
import secrets
import shutil
import sys
import tempfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from forgelib.errors import ForgeError
from forgelib.merge.config import EvoMergeConfig
from forgelib.merge.engine import merge_recipe
from forgelib.runtime import prepare_worker, spawn_pool


@dataclass(frozen=True)
class Candidate:
    """What a worker needs to rebuild and score one candidate: small and picklable."""

    key: str
    """The recipe hash (``evolve.recipe_hash``): names the candidate in errors and the cache."""
    recipe: dict[str, Any]
    merge_seed: int


def score_candidate(fitness: Callable[[Path], float], candidate: Candidate, scratch: str | Path | None) -> float:
    """Merge ``candidate`` into a scratch dir (under ``scratch`` when it exists here), score it, delete it."""
    scratch = scratch if scratch is not None and Path(scratch).is_dir() else None
    with tempfile.TemporaryDirectory(dir=scratch, prefix="candidate-") as tmp:
        model_dir = merge_recipe(candidate.recipe, Path(tmp) / "model", seed=candidate.merge_seed)
        return float(fitness(model_dir))


def _score_in_worker(fitness, candidate: Candidate, scratch, cwd: str, threads: int) -> float:
    prepare_worker(cwd, threads)  # recipes name parents relative to the driver's working directory
    return score_candidate(fitness, candidate, scratch)


class SerialBackend:
    """Candidates one after another in this process: exactly the search before backends existed."""

    def __init__(self, fitness, scratch):
        self.fitness, self.scratch = fitness, scratch

    def score(self, candidates: Sequence[Candidate]) -> Iterator[tuple[str, float]]:
        for candidate in candidates:
            yield candidate.key, score_candidate(self.fitness, candidate, self.scratch)

    def close(self) -> None:
        pass


class ProcessBackend:
    """A spawn-context process pool of ``workers``, started on first use and kept for the search."""

    def __init__(self, fitness, scratch, workers: int):
        try:
            pickle.dumps(fitness)
        except Exception as exc:
            raise ForgeError(f"evomerge: backend 'process' needs a picklable fitness (a module-level "
                             f"function or class instance, not a closure): {exc}") from exc
        self.fitness, self.scratch, self.workers = fitness, scratch, workers
        self.pool: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            self.pool = spawn_pool(self.workers)
        return self.pool

    def score(self, candidates: Sequence[Candidate]) -> Iterator[tuple[str, float]]:
        pending = list(candidates)
        for attempt in (1, 2):  # a failed candidate is retried once, in a fresh pool if it broke
            futures = {self._pool().submit(score_candidate, self.fitness, c, self.scratch): c for c in pending}
            failed: list[tuple[Candidate, BaseException]] = []
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    candidate = futures.pop(future)
                    if future.exception() is None:
                        yield candidate.key, future.result()
                    else:
                        failed.append((candidate, future.exception()))
            if not failed:
                return
            if attempt == 2:
                candidate, exc = failed[0]
                raise ForgeError(f"evomerge: candidate {candidate.key} failed twice on a worker process "
                                 f"(backend 'process'): {type(exc).__name__}: {exc}") from exc
            self.close()  # a killed worker breaks the whole pool; start the retry in a new one
            pending = [candidate for candidate, _ in failed]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


_RAY_TEMP_DIR: str | None = None


def _ray_temp_dir() -> str:
    """This process's Ray temp dir (removed at exit). One per process, not per search: Ray 2.60
    cannot start a second local instance in a process under a different ``_temp_dir``."""
    global _RAY_TEMP_DIR
    if _RAY_TEMP_DIR is None:
        _RAY_TEMP_DIR = tempfile.mkdtemp(prefix="ray-", dir=tempfile.gettempdir())
        atexit.register(shutil.rmtree, _RAY_TEMP_DIR, True)
    return _RAY_TEMP_DIR


class RayBackend:
    """One Ray task per candidate; Ray is started (or joined) on first use."""

    def __init__(self, fitness, scratch, config: EvoMergeConfig):
        self.fitness, self.scratch, self.config = fitness, scratch, config.ray
        self.started = False
        self.temp_dir: str | None = None
        self.saved_env: dict[str, str | None] = {}
        self.task = self.fitness_ref = None

    def _start(self) -> None:
        import ray

        if not ray.is_initialized():
            if self.config.address is not None:
                ray.init(address=self.config.address, log_to_driver=False)
            else:
                self.temp_dir = _ray_temp_dir()
                env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # what spawn would pass
                # ray.init sets RAY_AUTH_MODE=token in this process: restored on close, like ours.
                self.saved_env["RAY_AUTH_MODE"] = os.environ.get("RAY_AUTH_MODE")
                if (os.environ.get("RAY_AUTH_MODE") != "disabled"
                        and not any(k in os.environ for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"))):
                    # Ray would write a token to ~/.ray/auth_token; keep it with the rest of this instance.
                    token = Path(self.temp_dir, "auth_token")
                    if not token.exists():
                        token.write_text(secrets.token_hex(16))
                        token.chmod(0o600)
                    self._setenv("RAY_AUTH_TOKEN_PATH", str(token))
                if "RAY_gcs_server_port_wait_time_s" not in os.environ:  # default 30 s: too short on a loaded box
                    self._setenv("RAY_gcs_server_port_wait_time_s", "120")
                ray.init(num_cpus=self.config.num_cpus, include_dashboard=False, log_to_driver=False,
                         _temp_dir=self.temp_dir, runtime_env={"env_vars": env})
            self.started = True
        self.task = ray.remote(num_cpus=1, max_retries=self.config.max_retries,
                               retry_exceptions=True)(_score_in_worker)
        self.fitness_ref = ray.put(self.fitness)

    def _setenv(self, name: str, value: str) -> None:
        self.saved_env.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    def score(self, candidates: Sequence[Candidate]) -> Iterator[tuple[str, float]]:
        import ray
        import torch

        if self.task is None:
            self._start()
        cwd, threads = os.getcwd(), torch.get_num_threads()
        refs = {self.task.remote(self.fitness_ref, c, self.scratch, cwd, threads): c for c in candidates}
        while refs:
            [ref], _ = ray.wait(list(refs), num_returns=1)
            candidate = refs.pop(ref)
            try:
                value = ray.get(ref)
            except ray.exceptions.RayError as exc:
                for other in refs:
                    ray.cancel(other)
                cause = getattr(exc, "cause", None) or exc  # a RayTaskError wraps the task's exception
                raise ForgeError(f"evomerge: candidate {candidate.key} failed on Ray after "
                                 f"{1 + self.config.max_retries} attempt(s): {type(cause).__name__}: {cause}") from exc
            yield candidate.key, value

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.saved_env = {}


def make_backend(config: EvoMergeConfig, fitness: Callable[[Path], float], scratch: str | Path):
    """The backend ``config.backend`` names; call ``close()`` on it when the search ends."""
    if config.backend == "process":
        return ProcessBackend(fitness, scratch, config.workers)
    if config.backend == "ray":
        return RayBackend(fitness, scratch, config)
    return SerialBackend(fitness, scratch)
