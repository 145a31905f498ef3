"""Checkpoints of the Forge loop: everything a killed run needs to continue bit for bit.

A checkpoint is a directory ``<persist dir>/step-XXXXXXXX/`` written atomically (a kill leaves
either the previous checkpoint or the new one, never half of one):

- ``model.safetensors``: model weights (``safetensors.torch.save_model`` handles tied weights);
- ``optimizer.pt``: ``optimizer.state_dict()`` via ``torch.save``, read back with
  ``torch.load(weights_only=True)`` (tensors, numbers and strings only: no pickled code);
- ``controllers.json`` + ``controllers.safetensors``: each controller's ``state_dict()``; tensors
  nested anywhere in it go to the safetensors file and are replaced in the JSON by a reference
  ``{"__tensor__": key, "shape": [...], "dtype": "..."}``;
- ``rng.json`` + ``rng.safetensors``: Python, NumPy and torch CPU (and CUDA) generator states
  (:func:`forgelib.resume.save_rng`);
- ``trainer.json``: step, config and the logged history.

Whether a checkpoint directory may be resumed at all (same params, input model and data) is
decided by :class:`forgelib.resume.StateDir`, the one owner of that decision for every stage.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from forgelib.errors import ForgeError
from forgelib.io import atomic_dir, read_json, write_json
from forgelib.resume import load_rng, save_rng

PREFIX = "step-"


def split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors nested in dicts/lists by JSON references, collecting them in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": prefix, "shape": list(obj.shape), "dtype": str(obj.dtype).removeprefix("torch.")}
    if isinstance(obj, Mapping):
        return {str(k): split_tensors(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [split_tensors(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    return obj


def join_tensors(obj: Any, tensors: Mapping[str, torch.Tensor], device: torch.device | None = None) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(obj, dict) and "__tensor__" in obj:
        tensor = tensors[obj["__tensor__"]]
        return tensor.to(device) if device is not None else tensor
    if isinstance(obj, dict):
        return {k: join_tensors(v, tensors, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors, device) for v in obj]
    return obj


def checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "trainer.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = checkpoints(directory)
    return found[-1] if found else None


def save_checkpoint(directory: str | Path, *, step: int, model, optimizer, controllers: Mapping[str, Any],
                    trainer_state: Mapping[str, Any], keep: int) -> Path:
    """Write checkpoint ``step`` and delete all but the ``keep`` newest."""
    path = Path(directory) / f"{PREFIX}{step:08d}"
    with atomic_dir(path) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        tensors: dict[str, torch.Tensor] = {}
        states = {name: split_tensors(c.state_dict(), name, tensors) for name, c in controllers.items()}
        write_json(tmp / "controllers.json", states)
        save_file(tensors, str(tmp / "controllers.safetensors"))
        save_rng(tmp)
        write_json(tmp / "trainer.json", {**trainer_state, "step": step})
    for old in checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def read_trainer_state(path: str | Path) -> dict:
    path = Path(path)
    if not (path / "trainer.json").is_file():
        raise ForgeError(f"{path}: not a Forge checkpoint (no trainer.json); pass a step-* directory "
                         "or the checkpoint directory that holds them")
    return read_json(path / "trainer.json")


def load_checkpoint(path: str | Path, *, model, optimizer, controllers: Mapping[str, Any]) -> dict:
    """Restore model, optimizer, controllers and RNG in place; returns the trainer state."""
    path = Path(path)
    device = next(model.parameters()).device
    load_model(model, str(path / "model.safetensors"), device=str(device))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location=device))
    tensors = load_file(str(path / "controllers.safetensors"))
    states = read_json(path / "controllers.json")
    for name, controller in controllers.items():
        controller.load_state_dict(join_tensors(states[name], tensors, device))
    load_rng(path)
    return read_trainer_state(path)
