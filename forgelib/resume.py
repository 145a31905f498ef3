"""Resume or restart: the one owner of a resumable stage's saved state (``train``, ``evomerge``).

A resumable stage keeps its state in a DVC ``persist`` directory (``checkpoints/<stage>/``), which
DVC leaves in place when it reruns the stage. The state is only valid for the run that wrote it,
so the directory carries an *identity*: everything that determines the result (the params that
shape the trajectory, fingerprints of the input models and data). :meth:`StateDir.open` compares
the stored identity with the current one and decides, the same way for every stage:

- same identity: resume from what is saved;
- no state, or another identity: clear the directory and start fresh, printing which entries
  differ (``train.lr``, ``inputs.model``, ...) so a restart is never silent.

Saved state is everything a killed run needs to continue bit for bit: counters, the population or
the optimizer, caches, and the RNG states (:func:`save_rng` / :func:`load_rng`: Python's
``random``, NumPy and torch CPU/CUDA). Writes go through :mod:`forgelib.io` (temp file, rename), so
a kill leaves either the previous state or the new one.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from forgelib.io import read_json, write_json

IDENTITY = "identity.json"


def fingerprint_files(paths: Iterable[str | Path]) -> str:
    """sha256 over every file under ``paths`` (relative names and bytes), in a stable order."""
    digest = hashlib.sha256()
    for root in paths:
        root = Path(root)
        files = sorted(f for f in ([root] if root.is_file() else root.rglob("*")) if f.is_file())
        for file in files:
            digest.update(str(file.relative_to(root.parent)).encode())
            with open(file, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _plain(obj: Any) -> Any:
    """JSON round trip: tuples become lists, as they come back from the identity file."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".") or "(all)"]


class StateDir:
    """A persist directory holding one run's saved state, tied to that run's identity."""

    def __init__(self, path: str | Path, identity: Mapping[str, Any]):
        self.path = Path(path)
        self.identity = _plain(dict(identity))

    def open(self) -> bool:
        """Prepare the directory; True when it holds state of this same run (resume)."""
        stored_path = self.path / IDENTITY
        if stored_path.is_file():
            stored = read_json(stored_path)
            if stored == self.identity:
                return True
            changed = _differences(stored, self.identity)
            shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
            print(f"{self.path}: saved state is from another run ({shown} changed); starting fresh",
                  file=sys.stderr)
        elif self.path.exists() and any(self.path.iterdir()):
            print(f"{self.path}: saved state has no identity file; starting fresh", file=sys.stderr)
        self.clear()
        write_json(stored_path, self.identity)
        return False

    def clear(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        return self.path / name


def save_rng(directory: str | Path) -> None:
    """Write the state of every random generator a stage may draw from: Python's ``random`` and
    NumPy's global generator to ``rng.json``, torch CPU (and CUDA) to ``rng.safetensors``."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    directory = Path(directory)
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    write_json(directory / "rng.json", {"python": _plain(random.getstate()),
                                        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]})
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, str(directory / "rng.safetensors"))


def load_rng(directory: str | Path) -> None:
    """Inverse of :func:`save_rng`: restore every generator in place."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    directory = Path(directory)
    state = read_json(directory / "rng.json")
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    tensors = load_file(str(directory / "rng.safetensors"))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted((k for k in tensors if k.startswith("torch_cuda_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
