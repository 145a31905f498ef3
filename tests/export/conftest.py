"""Fixtures for the export tests: a compressed container, a ternary width-256 model, a byte-level
BPE model and a tied-embedding model, each saved as a Forge model directory."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from forgelib.compress.bitlinear import ternarize_weight
from forgelib.compress.config import CompressConfig
from forgelib.compress.pipeline import compress_model
from forgelib.configtools import from_dict
from forgelib.data.tasks import load_tasks
from forgelib.models.build import build_llama, llama_config
from forgelib.models.hf import load_tokenizer, save_model


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def container_dir(tiny_trained, tmp_path_factory):
    """The default two-stage codecs (BitNet + SeedLM, then VPTQ + HyperFn) on the tiny trained model,
    without the heal: ``<dir>/final/model.forge.safetensors``."""
    out = tmp_path_factory.mktemp("compressed") / "compressed"
    compress_model(tiny_trained[0], out, from_dict(CompressConfig, {"heal": {"steps": 0}}, "compress"))
    return out / "final"


@pytest.fixture(scope="session")
def ternary_256_dir(tiny_data, tmp_path_factory):
    """A 1-layer Llama of width 256 whose linear weights are exactly ternary (BitNet b1.58's absmean
    rounding), so every projection has rows of 256 or 512: what TQ1_0 / TQ2_0 hold."""
    tokenizer = load_tokenizer(tiny_data / "tokenizer")
    model = build_llama(llama_config(vocab_size=len(tokenizer), hidden_size=256, num_layers=1, num_heads=4,
                                     intermediate_size=512, max_position_embeddings=32), seed=1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2 and "embed_tokens" not in name:
                param.copy_(ternarize_weight(param))
    out = tmp_path_factory.mktemp("ternary") / "ternary"
    save_model(model, tokenizer, out, {"name": "ternary-256"})
    return out


@pytest.fixture(scope="session")
def bpe_model_dir(tiny_data, tmp_path_factory):
    """A byte-level BPE tokenizer (GPT-2 style: 256 byte symbols, one special token, merges learned on
    the tiny suite up to 300 tokens) and a model for it."""
    rows = [row for splits in load_tasks(tiny_data).values() for row in splits["train"]]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator([row["prompt"] + row["answer"] for row in rows], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>", clean_up_tokenization_spaces=False)
    model = build_llama(llama_config(vocab_size=len(tokenizer), hidden_size=32, num_layers=1, num_heads=2,
                                     max_position_embeddings=64, pad_token_id=0, bos_token_id=0, eos_token_id=0), seed=2)
    out = tmp_path_factory.mktemp("bpe") / "bpe"
    save_model(model, tokenizer, out, {"name": "bpe"})
    return out


@pytest.fixture(scope="session")
def tied_model_dir(tiny_data, tmp_path_factory):
    """A model whose LM head is its embedding (tie_word_embeddings), like SmolLM2."""
    tokenizer = load_tokenizer(tiny_data / "tokenizer")
    config = llama_config(vocab_size=len(tokenizer), hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=32)
    config.tie_word_embeddings = True
    model = build_llama(config, seed=3)
    out = tmp_path_factory.mktemp("tied") / "tied"
    save_model(model, tokenizer, out, {"name": "tied"})
    return out
