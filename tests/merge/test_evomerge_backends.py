"""The evomerge backends give one search: serial, a process pool and Ray agree bit for bit, and a
candidate that fails on a worker stops the search with its recipe hash (never fitness 0)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from forgelib.errors import ForgeError
from forgelib.merge.config import EvoMergeConfig, EvoRayConfig
from forgelib.merge.evolve import evolve

PROBE = "model.layers.0.mlp.down_proj.weight"
CONFIG = EvoMergeConfig(generations=2, population=4, seed=11, elite=1, layer_groups=1,
                        methods=("task_arithmetic", "dare_ties", "dfs"), ray=EvoRayConfig(num_cpus=2))


@dataclasses.dataclass(frozen=True)
class TargetFitness:
    """Picklable: negative distance of one merged tensor to 0.7*d0 + 0.3*d1 (dare_ties makes it
    depend on merge_seed). Logs the hash of every merged model's bytes to ``log_dir``."""

    parents: tuple[str, str, str]
    log_dir: str

    def __call__(self, model_dir: Path) -> float:
        weights = Path(model_dir) / "model.safetensors"
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        with open(Path(self.log_dir) / f"{os.getpid()}.log", "a") as f:
            f.write(digest + "\n")
        base, d0, d1 = (_read(p) for p in self.parents)
        target = base + 0.7 * (d0 - base) + 0.3 * (d1 - base)
        return -float((_read(model_dir) - target).norm())


class Fails:
    """Raises in the worker for every candidate."""

    def __call__(self, model_dir: Path) -> float:
        raise RuntimeError("boom")


@dataclasses.dataclass(frozen=True)
class FailsOnce:
    """Raises the first time it sees a model (a flaky worker), scores it on the retry."""

    seen_dir: str

    def __call__(self, model_dir: Path) -> float:
        digest = hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()
        marker = Path(self.seen_dir) / digest
        if not marker.exists():
            marker.touch()
            raise RuntimeError("flaky")
        return -float(_read(model_dir).norm())


def _read(model_dir) -> torch.Tensor:
    with safe_open(Path(model_dir) / "model.safetensors", framework="pt") as f:
        return f.get_tensor(PROBE)


def search(family, tmp_path: Path, backend: str, fitness=None, config=CONFIG):
    parents = [str(family[n]) for n in ("child0", "child1", "child2")]
    log_dir = tmp_path / f"log-{backend}"
    log_dir.mkdir()
    fitness = fitness or TargetFitness((str(family["ancestor"]), parents[0], parents[1]), str(log_dir))
    result = evolve(parents, str(family["ancestor"]), fitness, config=dataclasses.replace(config, backend=backend),
                    state_dir=tmp_path / f"state-{backend}", progress=False)
    digests = sorted(line for p in log_dir.glob("*.log") for line in p.read_text().split())
    return result, digests


@pytest.fixture(scope="module")
def serial(family, tmp_path_factory):
    return search(family, tmp_path_factory.mktemp("serial"), "serial")


@pytest.mark.parametrize("backend", ["process", "ray"])
def test_every_backend_gives_the_serial_search(family, serial, tmp_path, backend):
    if backend == "ray":
        pytest.importorskip("ray")
    result, digests = search(family, tmp_path, backend)
    expected, expected_digests = serial
    assert result.history == expected.history
    assert result.best_fitness == expected.best_fitness
    assert result.best_recipe == expected.best_recipe and result.best_genome == expected.best_genome
    assert result.evaluations == expected.evaluations == len(digests)
    assert digests == expected_digests  # the same merged model bytes, candidate for candidate
    assert not list((tmp_path / f"state-{backend}").glob("candidate-*"))


def test_a_search_resumes_under_another_backend(family, serial, tmp_path):
    expected, _ = serial
    search(family, tmp_path, "serial", config=dataclasses.replace(CONFIG, generations=1))
    (tmp_path / "log-serial").rename(tmp_path / "log-first")
    (tmp_path / "state-serial").rename(tmp_path / "state-process")
    result, digests = search(family, tmp_path, "process")
    assert result.history == expected.history and result.best_recipe == expected.best_recipe
    assert result.evaluations_this_run == len(digests) < result.evaluations  # generation 0 was cached


@pytest.mark.parametrize("backend", ["process", "ray"])
def test_a_failing_candidate_stops_the_search_with_its_hash(family, tmp_path, backend):
    if backend == "ray":
        pytest.importorskip("ray")
    config = dataclasses.replace(CONFIG, ray=EvoRayConfig(num_cpus=2, max_retries=0))
    with pytest.raises(ForgeError, match=r"candidate [0-9a-f]{16} failed.*boom"):
        search(family, tmp_path, backend, fitness=Fails(), config=config)
    assert not (tmp_path / f"state-{backend}" / "state.json").exists()  # generation 0 never finished


def test_a_candidate_that_fails_once_is_retried(family, tmp_path):
    seen = tmp_path / "seen"
    seen.mkdir()
    result, _ = search(family, tmp_path, "process", fitness=FailsOnce(str(seen)))
    assert result.evaluations == len(list(seen.iterdir())) and len(result.history) == CONFIG.generations


def test_process_backend_refuses_a_closure(family, tmp_path):
    with pytest.raises(ForgeError, match="picklable fitness"):
        search(family, tmp_path, "process", fitness=lambda model_dir: 0.0)
