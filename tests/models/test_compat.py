"""Incompatible model directories are refused with the two directories and the field named."""

from __future__ import annotations

import json

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from forgelib.data.tokenizer import ALPHABET, build_char_tokenizer
from forgelib.errors import ForgeError
from forgelib.models.build import build_llama, llama_config
from forgelib.models.compat import check_compatible, check_tokenizer_matches
from forgelib.models.hf import embedding_rows, save_model

CARD = {"name": "tiny", "description": "test model"}


def _save_llama(path, *, alphabet=ALPHABET, vocab_size=None, hidden=16, layers=2, seed=0):
    tokenizer = build_char_tokenizer(alphabet)
    config = llama_config(vocab_size=vocab_size or len(tokenizer), hidden_size=hidden, num_layers=layers, num_heads=2)
    save_model(build_llama(config, seed=seed), tokenizer, path, CARD)
    return path


@pytest.fixture
def base(tmp_path):
    return _save_llama(tmp_path / "base")


def test_two_fine_tunes_of_one_ancestor_are_compatible(base, tmp_path):
    check_compatible([base, _save_llama(tmp_path / "sibling", seed=1)])
    check_tokenizer_matches(base)
    assert embedding_rows(base) == len(build_char_tokenizer(ALPHABET))


@pytest.mark.parametrize("change, field", [
    (dict(hidden=32), "hidden_size"),
    (dict(layers=3), "num_hidden_layers"),
    (dict(alphabet=ALPHABET + "!?"), "vocab_size"),
])
def test_different_sizes_name_both_dirs_and_the_field(base, tmp_path, change, field):
    other = _save_llama(tmp_path / "other", **change)
    with pytest.raises(ForgeError) as err:
        check_compatible([base, other])
    assert str(base) in str(err.value) and str(other) in str(err.value) and f"`{field}`" in str(err.value)


def test_layer_stacking_merges_may_differ_in_depth(base, tmp_path):
    check_compatible([base, _save_llama(tmp_path / "deeper", layers=3)], same_depth=False)


def test_different_architecture_is_refused(base, tmp_path):
    tokenizer = build_char_tokenizer(ALPHABET)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=2, n_head=2, n_positions=64))
    save_model(gpt2, tokenizer, tmp_path / "gpt2", CARD)
    with pytest.raises(ForgeError, match="`model_type`: 'llama' vs 'gpt2'"):
        check_compatible([base, tmp_path / "gpt2"])


def test_same_size_but_different_vocabulary_is_refused(base, tmp_path):
    shuffled = _save_llama(tmp_path / "shuffled", alphabet=ALPHABET[::-1])
    with pytest.raises(ForgeError, match="different tokenizers .*token '0' is id 4 in the first and"):
        check_compatible([base, shuffled])


def test_tokenizer_larger_than_the_embedding_is_refused(tmp_path):
    small = _save_llama(tmp_path / "small", vocab_size=10)
    with pytest.raises(ForgeError, match="tokenizer has 51 tokens but the model's embedding has 10 rows"):
        check_tokenizer_matches(small)
    with pytest.raises(ForgeError, match="tokenizer has 51 tokens"):
        check_compatible([small])


def test_config_that_disagrees_with_the_weights_is_refused(base):
    config = json.loads((base / "config.json").read_text())
    config["vocab_size"] += 64
    (base / "config.json").write_text(json.dumps(config))
    with pytest.raises(ForgeError, match="vocab_size is 115 but the embedding has 51 rows"):
        check_tokenizer_matches(base)


def test_missing_directory_is_a_user_error(tmp_path):
    with pytest.raises(ForgeError, match="not found"):
        check_compatible([tmp_path / "nope"])
