"""Benchmark the evomerge backends: the same search on `serial`, `process` and `ray`, side by side.

Uses the committed specialists in ``models/base`` (ancestor + specialists) scored by the stage's
real fitness (validation exact match from ``data/``). Reports each backend's wall time (and
checks that all three find the same history and best recipe), Ray's startup overhead (``ray.init``
plus a first trivial task), the measured seconds per candidate, and where Ray pays for itself
under the cost model

    serial(n) = n * t
    ray(n)    = startup + ceil(n / workers) * t + n * overhead

with ``t`` the serial seconds per candidate and ``overhead`` Ray's per-task cost (measured as
Ray's wall time minus its startup and ideal parallel time, per task). Ray wins once
``serial(n) > ray(n)``; the break-even ``n`` is printed (None if it never pays at this ``t``).

    python bench/evomerge_backends.py --generations 2 --population 4 --workers 2 [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ray_startup(num_cpus: int) -> dict:
    """Seconds for ray.init (local, temp dir under the system temp dir) and a first trivial task."""
    import ray

    from forgelib.merge.backends import RayBackend
    from forgelib.merge.config import EvoMergeConfig, EvoRayConfig

    backend = RayBackend(None, None, EvoMergeConfig(backend="ray", ray=EvoRayConfig(num_cpus=num_cpus)))
    start = time.perf_counter()
    backend._start()
    init_s = time.perf_counter() - start
    ray.get(ray.remote(lambda: 1).remote())
    first_s = time.perf_counter() - start - init_s
    backend.close()
    return {"init_s": init_s, "first_task_s": first_s, "startup_s": init_s + first_s}


def break_even(t: float, startup: float, workers: int, overhead: float, limit: int = 10_000) -> int | None:
    for n in range(1, limit):
        if n * t > startup + math.ceil(n / workers) * t + n * overhead:
            return n
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="models/base")
    parser.add_argument("--data", default="data")
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="process workers and Ray num_cpus")
    parser.add_argument("--fitness-limit", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    os.chdir(ROOT)
    from forgelib.merge.config import EvoMergeConfig, EvoRayConfig
    from forgelib.merge.evolve import evolve
    from forgelib.merge.fitness import ValidationFitness
    from forgelib.runtime import configure_torch

    configure_torch()
    models = Path(args.models)
    if not (models / "ancestor" / "config.json").is_file():
        sys.exit(f"{models}/ancestor not found: run the `base` stage (or `dvc pull`) first")
    parents = sorted(str(p) for p in models.iterdir() if p.name != "ancestor" and (p / "config.json").is_file())
    config = EvoMergeConfig(generations=args.generations, population=args.population, elite=1, tournament=2,
                            layer_groups=1, methods=("task_arithmetic", "ties", "linear"),
                            fitness_limit=args.fitness_limit, workers=args.workers,
                            ray=EvoRayConfig(num_cpus=args.workers))
    fitness = ValidationFitness(args.data, config.fitness_limit)

    rows, results = {}, {}
    with tempfile.TemporaryDirectory(prefix="evobench-") as tmp:
        for backend in ("serial", "process", "ray"):
            start = time.perf_counter()
            result = evolve(parents, str(models / "ancestor"), fitness, progress=False,
                            config=dataclasses.replace(config, backend=backend), state_dir=Path(tmp) / backend)
            rows[backend] = {"wall_s": time.perf_counter() - start, "candidates": result.evaluations}
            results[backend] = result
        shutil.rmtree(tmp, ignore_errors=True)
    same = all(r.history == results["serial"].history and r.best_recipe == results["serial"].best_recipe
               for r in results.values())

    startup = ray_startup(args.workers)
    n = rows["serial"]["candidates"]
    t = rows["serial"]["wall_s"] / n
    ideal_ray = startup["startup_s"] + sum(  # per generation, new candidates run ceil(k/workers) waves
        math.ceil(k / args.workers) for k in _new_per_generation(results["serial"], config)) * t
    overhead = max(0.0, (rows["ray"]["wall_s"] - ideal_ray) / n)
    report = {
        "parents": parents, "generations": args.generations, "population": args.population,
        "workers": args.workers, "backends": rows, "identical_results": same,
        "seconds_per_candidate": t, "ray_startup": startup, "ray_overhead_per_task_s": overhead,
        "ray_break_even_candidates_per_generation": break_even(t, startup["startup_s"], args.workers, overhead),
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{n} candidates over {args.generations} generations, {args.workers} workers, "
          f"{t:.2f} s per candidate (serial); identical results: {same}")
    for backend, row in rows.items():
        print(f"  {backend:8s} {row['wall_s']:7.1f} s")
    print(f"Ray startup: init {startup['init_s']:.1f} s + first task {startup['first_task_s']:.2f} s; "
          f"per-task overhead {overhead:.2f} s")
    print(f"Ray pays for itself from {report['ray_break_even_candidates_per_generation']} candidates "
          f"(serial n*t > startup + ceil(n/workers)*t + n*overhead)")


def _new_per_generation(result, config) -> list[int]:
    """Candidates scored per generation, assuming the first fills the population and later ones
    add at most population - elite new recipes (the rest of the evaluations, spread evenly)."""
    first = min(config.population, result.evaluations)
    rest = result.evaluations - first
    later = max(1, config.generations - 1)
    return [first] + [math.ceil(rest / later)] * (config.generations - 1)


if __name__ == "__main__":
    main()
