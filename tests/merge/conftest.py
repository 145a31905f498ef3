"""Fixtures: a tiny Llama ancestor and three children derived from it by small seeded deltas.

Shared ancestry is what makes task vectors meaningful, so the children are the ancestor plus
``0.02 * N(0, 1)`` noise per parameter (a different seed per child), saved as HF directories
with a shared character-level tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Split
from transformers import PreTrainedTokenizerFast

from forgelib.models.build import build_llama, llama_config

VOCAB = ["<pad>", "<bos>", "<eos>", "<unk>"] + list("0123456789+-*=abcdefghijklmnopqr")[:28]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    model = WordLevel({tok: i for i, tok in enumerate(VOCAB)}, unk_token="<unk>")
    tok = Tokenizer(model)
    tok.pre_tokenizer = Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def save_family(root: Path, *, num_layers: int = 2, hidden: int = 16, children: int = 3,
                scale: float = 0.02, rms_norm_eps: float | None = None) -> dict[str, Path]:
    config = llama_config(vocab_size=len(VOCAB), hidden_size=hidden, num_layers=num_layers, num_heads=2)
    if rms_norm_eps is not None:
        config.rms_norm_eps = rms_norm_eps
    tokenizer = tiny_tokenizer()
    paths = {}
    for i, name in enumerate(["ancestor"] + [f"child{k}" for k in range(children)]):
        model = build_llama(config, seed=0)
        if i:
            gen = torch.Generator().manual_seed(100 + i)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(scale * torch.randn(p.shape, generator=gen))
        paths[name] = root / name
        model.save_pretrained(paths[name], safe_serialization=True)
        tokenizer.save_pretrained(paths[name])
    return paths


@pytest.fixture(scope="session")
def family(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    return save_family(tmp_path_factory.mktemp("family"))


@pytest.fixture
def make_family():
    """``save_family`` itself, for tests that need a family with other settings."""
    return save_family
