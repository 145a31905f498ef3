"""Build the base models: a pretrained ancestor and specialists fine-tuned from it.

Shared ancestry is what makes merging meaningful (task vectors of fine-tunes of one model add
up); this mirrors real fine-tunes of one pretrained base. The ancestor either is built and
pretrained on a mix of every task (``base.source: scratch``) or imported (an HF directory, a
GGUF file, or a model shipped in a PyPI package).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import torch


from forgelib.base.config import BaseConfig, TrainSettings
from forgelib.configtools import to_dict
from forgelib.data.batching import encode_rows
from forgelib.data.tasks import families, load_tasks
from forgelib.errors import ForgeError
from forgelib.models.build import build_llama, llama_config
from forgelib.models.hf import load_model, load_tokenizer, require_model_dir, save_model
from forgelib.io import atomic_dir
from forgelib.telemetry import live_logger
from forgelib.base.sft import SFTSettings, train_sft


def _settings(train: TrainSettings, seed: int) -> SFTSettings:
    return SFTSettings(
        steps=train.steps, lr=train.lr, batch_size=train.batch_size,
        weight_decay=train.weight_decay, warmup_steps=train.warmup_steps, seed=seed,
    )


def _train_rows(tasks: dict, names: list[str]) -> list[dict]:
    return [row for name in names for row in tasks[name]["train"]]


def import_ancestor(source: str, out_dir: Path) -> tuple[Path, dict]:
    """Copy an HF directory or convert a GGUF model into ``out_dir``; return it and the import check.

    The check compares the written directory with its source on a fixed prompt: the largest
    absolute logit difference (0 for a lossless import) and whether both tokenizers agree.
    """
    from forgelib.models.gguf import verify_conversion

    if source.startswith(("gguf:", "package:")):
        from forgelib.models.gguf import find_packaged_gguf, import_gguf

        if source.startswith("package:"):
            gguf = find_packaged_gguf(source.split(":", 1)[1].replace("-", "_"))
        else:
            gguf = Path(source[5:])
        import_gguf(gguf, out_dir)
        return out_dir, verify_conversion(gguf, out_dir)
    src = require_model_dir(source, "base.source model directory")
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    return out_dir, compare_dirs(src, out_dir)


@torch.no_grad()
def compare_dirs(a: str | Path, b: str | Path, prompt: str = "def add(a, b):\n    return a + b\n") -> dict:
    """The import check for a copied HF directory: same logits and token ids on ``prompt``."""
    model_a, tok_a = load_model(a)
    model_b, tok_b = load_model(b)
    ids = tok_a(prompt, return_tensors="pt")["input_ids"]
    diff = (model_a(ids).logits - model_b(ids).logits).abs().max().item()
    return {"max_abs_logit_diff": diff, "tokenizer_match": ids[0].tolist() == tok_b(prompt)["input_ids"],
            "n_prompt_tokens": ids.shape[1]}


def build_ancestor(cfg: BaseConfig, data_dir: str | Path, out_dir: str | Path, metrics_dir: str | Path | None = None) -> Path:
    """Pretrain a fresh Llama ancestor on every task's train split, or import one."""
    out_dir = Path(out_dir)
    if cfg.source != "scratch":
        # Nothing is trained, so the stage's curves directory holds the import check instead
        # (one step); `dvc metrics show` then reports max_abs_logit_diff for the ancestor.
        path, check = import_ancestor(cfg.source, out_dir)
        with live_logger(metrics_dir) as log:
            log(0, {"max_abs_logit_diff": check["max_abs_logit_diff"], "tokenizer_match": int(check["tokenizer_match"])})
        return path
    tasks = load_tasks(data_dir)
    tokenizer = load_tokenizer(Path(data_dir) / "tokenizer")
    shape = cfg.model
    config = llama_config(
        vocab_size=len(tokenizer), hidden_size=shape.hidden_size, num_layers=shape.num_layers,
        num_heads=shape.num_heads, intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    model = build_llama(config, seed=cfg.seed)
    with live_logger(metrics_dir) as log:
        history = train_sft(model, encode_rows(tokenizer, _train_rows(tasks, list(tasks))), _settings(cfg.ancestor, cfg.seed),
                            pad_id=tokenizer.pad_token_id, log=log, desc="ancestor")
    card = {
        "name": "forge-ancestor",
        "description": "Llama-architecture ancestor built from scratch and pretrained on a mix of every task of the suite.",
        "parents": [],
        "data": {"tasks": sorted(tasks), "split": "train"},
        "params": {"model": to_dict(cfg.model), "train": to_dict(cfg.ancestor), "seed": cfg.seed},
        "metrics": {"final_train_loss": history[-1]["loss"]},
    }
    return save_model(model, tokenizer, out_dir, card)


def _mixed_rows(tasks: dict, family: str, replay_fraction: float, seed: int) -> list[dict]:
    """The family's train rows, plus a replay share drawn from the other families."""
    own_names = families(list(tasks)).get(family)
    if not own_names:
        raise ForgeError(f"base.specialists: family {family!r} has no tasks; families: {', '.join(families(list(tasks)))}")
    own = _train_rows(tasks, own_names)
    if replay_fraction <= 0:
        return own
    others = _train_rows(tasks, [t for t in tasks if t not in own_names])
    n_replay = int(len(own) * replay_fraction / (1 - replay_fraction))
    rng = random.Random(seed)
    return own + rng.sample(others, min(n_replay, len(others)))


def build_specialist(name: str, cfg: BaseConfig, data_dir: str | Path, ancestor_dir: str | Path, out_dir: str | Path,
                     metrics_dir: str | Path | None = None) -> Path:
    """Fine-tune the ancestor on one task family."""
    if name not in cfg.specialists:
        raise ForgeError(f"base.specialists: no specialist named {name!r}; defined: {', '.join(cfg.specialists)}")
    spec = cfg.specialists[name]
    tasks = load_tasks(data_dir)
    model, tokenizer = load_model(ancestor_dir)
    rows = _mixed_rows(tasks, spec.family, spec.replay_fraction, cfg.seed)
    train = spec.settings(cfg.specialist)
    with live_logger(metrics_dir) as log:
        history = train_sft(model, encode_rows(tokenizer, rows), _settings(train, cfg.seed + 1),
                            pad_id=tokenizer.pad_token_id, log=log, desc=f"specialist {name}")
    card = {
        "name": f"forge-specialist-{name}",
        "description": f"Full fine-tune of the ancestor on the {spec.family!r} task family.",
        "parents": [str(ancestor_dir)],
        "data": {"family": spec.family, "tasks": families(list(tasks))[spec.family], "replay_fraction": spec.replay_fraction},
        "params": {"train": to_dict(train), "seed": cfg.seed + 1},
        "metrics": {"final_train_loss": history[-1]["loss"]},
    }
    return save_model(model, tokenizer, out_dir, card)
