"""From a container back to something runnable: a torch model, or a Hugging Face directory.

Decoding streams one weight at a time into the model's parameters, so peak memory is the model
plus one decoded tensor. The model is built from the container's own config.json: no other file
is needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from forgelib.compress.codecs.registry import decode_entry
from forgelib.compress.container import Container, read_container
from forgelib.errors import ForgeError
from forgelib.io import atomic_dir
from forgelib.models.card import write_card
from forgelib.models.hf import config_dict, require_model_dir

# Files of an HF model directory that the container does NOT carry as side files: the weights
# (they are the payloads), config.json (stored as model_config) and the model card (describes
# the uncompressed model; decompress_to_dir writes a new one).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")
NOT_SIDE_FILES = {"config.json", "README.md", "model.safetensors.index.json", "pytorch_model.bin.index.json"}
# Small tensor files that belong to the model's behaviour rather than to its weights, carried
# verbatim: the specialize stage's SVF experts (fp16 z vectors, a few KiB; they are applied to the
# SVD of the decoded weights at load) and a Quiet-STaR model's mixing head.
CARRIED_TENSOR_FILES = {"svf_experts.safetensors", "mixing_head.safetensors"}
MAX_SIDE_BYTES = 64 << 20


def model_dir_side_files(model_dir: str | os.PathLike) -> tuple[dict, dict[str, bytes]]:
    """``(config.json as a dict, {file name: bytes})`` for a model directory's non-weight files."""
    model_dir = require_model_dir(model_dir)
    files = {}
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name not in NOT_SIDE_FILES \
                and (path.name in CARRIED_TENSOR_FILES or not path.name.endswith(WEIGHT_SUFFIXES)):
            files[path.name] = path.read_bytes()
    if sum(map(len, files.values())) > MAX_SIDE_BYTES:
        raise ForgeError(f"{model_dir}: side files exceed {MAX_SIDE_BYTES >> 20} MiB; remove stray files")
    return config_dict(model_dir), files


def decoded_tensors(container: Container) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(weight name, decoded tensor)`` one at a time (see :func:`decode_entry`)."""
    for name, entry in container.entries.items():
        yield name, decode_entry(entry)


def build_empty_model(model_config: dict) -> PreTrainedModel:
    """An fp32 model of the container's architecture; its random init is overwritten by decoding."""
    config_dict = dict(model_config)
    model_type = config_dict.pop("model_type", None)
    if model_type is None:
        raise ForgeError("container model_config has no model_type; it was not written by Forge")
    try:
        config = AutoConfig.for_model(model_type, **config_dict)
    except ValueError as err:
        raise ForgeError(f"container model_config: unsupported model_type {model_type!r}: {err}") from None
    with torch.random.fork_rng(devices=[]):  # do not disturb the caller's RNG stream
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def load_into(model: PreTrainedModel, tensors: Iterator[tuple[str, torch.Tensor]]) -> None:
    """Copy decoded tensors into ``model``; every parameter must be covered (tied ones excepted)."""
    state = model.state_dict()
    seen = set()
    with torch.no_grad():
        for name, tensor in tensors:
            if name not in state:
                raise ForgeError(f"container weight {name!r} does not exist in the {type(model).__name__}")
            if tuple(state[name].shape) != tuple(tensor.shape):
                raise ForgeError(f"container weight {name!r} has shape {list(tensor.shape)}, "
                                 f"model expects {list(state[name].shape)}")
            state[name].copy_(tensor)
            seen.add(name)
    pointers = {state[name].data_ptr() for name in seen}
    params = dict(model.named_parameters())
    missing = [n for n in params if n not in seen and params[n].data_ptr() not in pointers]
    if missing:
        raise ForgeError(f"container lacks weights {missing[:3]}{'...' if len(missing) > 3 else ''}")


def load_compressed(path: str | os.PathLike) -> PreTrainedModel:
    """A runnable fp32 causal LM (e.g. ``LlamaForCausalLM``) decoded from a container file."""
    return _decoded_model(read_container(path))


def _decoded_model(container: Container) -> PreTrainedModel:
    model = build_empty_model(container.model_config)
    load_into(model, decoded_tensors(container))
    return model


def decompress_to_dir(path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a Hugging Face model directory (weights in their stored dtypes) from a container
    (the file, or the stage directory holding it, as ``forge eval`` accepts)."""
    container = read_container(container_path(path) or path)
    with atomic_dir(out_dir) as tmp:
        save_file(dict(decoded_tensors(container)), tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(container.model_config, indent=2, sort_keys=True) + "\n")
        for name, data in container.files.items():
            (tmp / name).write_bytes(data)
        source = container_path(path) or Path(path)
        write_card(tmp, {
            "name": "Decompressed Forge model",
            "description": f"Decoded from the compressed container `{source.name}` ({source.stat().st_size} bytes). "
                           "The weights are the codecs' reconstructions, not the original weights.",
            "parents": [str(source)],
            "compression": {"codecs": sorted({entry.codec for entry in container.entries.values()}),
                            "provenance": container.info},
        })
    return Path(out_dir)


def container_path(path: str | os.PathLike) -> Path | None:
    """The container ``path`` names (the file itself, or ``DIR/model.forge.safetensors``), else None."""
    from forgelib.compress.container import CONTAINER_NAME

    path = Path(path)
    if path.is_file() and path.name.endswith(".forge.safetensors"):
        return path
    if path.is_dir() and (path / CONTAINER_NAME).is_file():
        return path / CONTAINER_NAME
    return None


def side_files_any(path: str | os.PathLike) -> dict[str, bytes]:
    """The non-weight files of a model directory or container (what :func:`model_dir_side_files`
    keeps): a loader that needs more than weights (SVF experts, a mixing head) reads them here."""
    found = container_path(path)
    if found is not None:
        return dict(read_container(found).files)
    return model_dir_side_files(path)[1]


def load_model_any(path: str | os.PathLike):
    """``(model, tokenizer)`` from a Hugging Face directory or a Forge container (file or its dir).

    The one loader behind every model path a ``forge`` command or a stage accepts; evaluation
    functions take its result, so :mod:`forgelib.eval` does not depend on compression. A
    container is decoded in memory; its tokenizer comes from the side files it carries, so a
    compressed model runs wherever an uncompressed one does (``forge eval``, ``forge test``, the
    ``humaneval`` stages) without a ``forge compression decompress`` step first. A damaged
    directory or container is a ForgeError naming it.
    """
    import tempfile

    from forgelib.models.hf import check_tokenizer_fits, load_model, load_tokenizer

    found = container_path(path)
    if found is None:
        return load_model(path)
    container = read_container(found)
    model = _decoded_model(container)
    with tempfile.TemporaryDirectory(prefix="forge-tok-") as tmp:
        for name, data in container.files.items():
            (Path(tmp) / name).write_bytes(data)
        (Path(tmp) / "config.json").write_text(json.dumps(container.model_config))
        try:
            tokenizer = load_tokenizer(tmp)
        except ForgeError as exc:
            raise ForgeError(f"{found}: the container's tokenizer files do not load ({str(exc).split(': ', 1)[-1]})") from None
    check_tokenizer_fits(tokenizer, model.get_input_embeddings().weight.shape[0], found)
    return model.eval(), tokenizer
