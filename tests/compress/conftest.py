"""Shared fixtures for the compression tests: one torch thread, a tiny saved Llama."""

import pytest
import torch

from forgelib.models.build import build_llama, llama_config


@pytest.fixture(autouse=True)
def single_thread():
    # The codecs run many small ops; on a shared 2-core machine extra threads only add contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved 2-layer Llama (hidden 32, vocab 40) with a stand-in tokenizer side file."""
    path = tmp_path_factory.mktemp("tiny_llama")
    model = build_llama(llama_config(vocab_size=40, hidden_size=32, num_layers=2, num_heads=2), seed=0)
    model.save_pretrained(path)
    (path / "tokenizer.json").write_text('{"model": {"type": "char"}}')
    return path


@pytest.fixture(scope="session")
def token_batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 40, (8, 12), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
