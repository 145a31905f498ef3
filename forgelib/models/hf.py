"""Models on disk: Hugging Face directories with safetensors weights and a model card.

A Forge model directory is what ``AutoModelForCausalLM.from_pretrained`` reads: ``config.json``,
``model.safetensors`` (sharded with an index when large), the tokenizer files, plus a
``README.md`` model card that says how the model was made (parents, data, params, metrics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from forgelib.errors import ForgeError
from forgelib.io import atomic_dir


def require_model_dir(path: str | Path, what: str = "model directory") -> Path:
    """Fail with a clear message unless ``path`` is an HF model directory."""
    path = Path(path)
    if not path.is_dir():
        raise ForgeError(f"{path}: {what} not found; pass an existing Hugging Face model directory")
    if not (path / "config.json").is_file():
        raise ForgeError(f"{path}: not a Hugging Face model directory (no config.json)")
    if not any(path.glob("*.safetensors")):
        raise ForgeError(f"{path}: no *.safetensors weights; Forge reads safetensors only (never pickles)")
    return path


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ForgeError(f"{path}: cannot load a tokenizer ({exc})") from None
    if tokenizer.pad_token is None:
        # Batched training and generation need a pad id; padded positions are masked out, so
        # reusing <eos> (the usual choice for causal LMs without one) changes no result.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_tokenizer_fits(model, tokenizer, where: str | Path) -> None:
    """A tokenizer whose ids exceed the embedding table would index out of range at run time."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ForgeError(
            f"{where}: tokenizer has {len(tokenizer)} tokens but the model's embedding has {rows} rows; "
            "use the tokenizer the model was trained with"
        )


def load_model(path: str | Path, *, dtype: torch.dtype = torch.float32):
    """Load ``(model, tokenizer)`` from an HF directory, in eval mode on CPU."""
    from transformers import AutoModelForCausalLM

    path = require_model_dir(path)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    check_tokenizer_fits(model, tokenizer, path)
    model.eval()
    return model, tokenizer


def model_card(card: dict[str, Any]) -> str:
    """Render a model card: YAML front matter (machine-readable) plus a readable summary."""
    front = {"library_name": "transformers", "tags": ["forge"], **{k: v for k, v in card.items() if k != "description"}}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", ""]
    lines.append(f"# {card.get('name', 'Forge model')}")
    lines.append("")
    lines.append(card.get("description", "Built by Forge."))
    for key in ("parents", "data", "recipe", "params", "metrics"):
        if key in card:
            lines += ["", f"## {key.capitalize()}", "", "```yaml", yaml.safe_dump(card[key], sort_keys=False).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def save_model(model, tokenizer, out_dir: str | Path, card: dict[str, Any], extra_files: dict[str, str] | None = None) -> Path:
    """Write ``model`` + ``tokenizer`` + model card to ``out_dir`` atomically."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size="2GB")
        tokenizer.save_pretrained(str(tmp))
        (tmp / "README.md").write_text(model_card(card))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return out_dir


def read_card(path: str | Path) -> dict[str, Any]:
    """The YAML front matter of a model card (empty if there is none)."""
    readme = Path(path) / "README.md"
    if not readme.is_file():
        return {}
    text = readme.read_text()
    if not text.startswith("---"):
        return {}
    return yaml.safe_load(text.split("---", 2)[1]) or {}


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def config_dict(path: str | Path) -> dict:
    return json.loads((Path(path) / "config.json").read_text())
