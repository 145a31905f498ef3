"""A tokenizer as GGUF metadata: llama.cpp's ``tokenizer.ggml.*`` keys.

Two kinds of tokenizer map onto GGUF's byte-level BPE model (``tokenizer.ggml.model = gpt2``):

* a byte-level BPE (GPT-2 style, e.g. SmolLM2's): the tokens as the vocabulary spells them, the
  merges in rank order, and ``pre`` naming the split regex (``smollm`` when digits are split one
  by one before the GPT-2 regex, as SmolLM2's tokenizer.json does; else ``gpt-2``);
* the embedded default's character-level tokenizer (a WordLevel vocabulary of single characters):
  a BPE with no merges tokenizes exactly one character per token, so it is written as ``gpt2``
  with each character in GPT-2's byte-to-unicode spelling (a space becomes ``Ġ``) and no merges.
  GGUF cannot store an empty array, so the merges key is absent and ``tokenizer.ggml.scores`` (all
  0) is written instead: transformers then derives the merges from the vocabulary and finds none.
  llama.cpp's loader insists on a merges key for ``gpt2`` and refuses this vocabulary; a
  SentencePiece (``llama``) vocabulary would suit llama.cpp, but transformers reads that back with
  a prefix space (one extra token per text), so a char-level GGUF targets transformers.

Special tokens are ``CONTROL``; ids the tokenizer does not use (a padded embedding table) are
``[PAD<id>]`` tokens of type ``UNUSED``, as llama.cpp's convert_hf_to_gguf.py writes them. Any
other tokenizer (SentencePiece, WordPiece, a word-level vocabulary) is a ForgeError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gguf import GGUFWriter, TokenType
from transformers.convert_slow_tokenizer import bytes_to_unicode

from forgelib.errors import ForgeError


@dataclass(frozen=True)
class GGUFVocab:
    model: str  # tokenizer.ggml.model
    pre: str  # tokenizer.ggml.pre: the pre-tokenizer's split regex, by llama.cpp's name
    tokens: list[str]
    token_types: list[int]
    merges: list[str]  # "left right", rank order; empty for the char tokenizer
    special_ids: dict[str, int]  # bos / eos / unk / pad -> id
    add_bos: bool
    add_eos: bool
    chat_template: str | None


def gguf_vocab(tokenizer, n_vocab: int) -> GGUFVocab:
    """The GGUF vocabulary of ``tokenizer`` for a model whose embedding has ``n_vocab`` rows."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = backend["model"]["type"]
    ids = tokenizer.get_vocab()
    specials = {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
    added = {token.content for token in tokenizer.added_tokens_decoder.values()}
    if kind == "BPE" and _byte_level(backend):
        spell, merges, pre = (lambda token: token), _merges(backend["model"]["merges"]), _pre(backend)
    elif kind == "WordLevel" and (all(len(token) == 1 for token in ids if token not in added)
                                  or _number_tokens(backend, ids, added)):
        spelling = bytes_to_unicode()
        spell, pre = (lambda token: "".join(spelling[b] for b in token.encode("utf-8"))), "gpt-2"
        # one merge per two-digit number token, in id order; none for the plain character tokenizer
        merges = [f"{token[0]} {token[1]}" for token, _ in sorted(ids.items(), key=lambda item: item[1])
                  if token not in added and len(token) == 2]
    else:
        raise ForgeError(f"GGUF export: tokenizer model {kind!r} is not supported; supported: byte-level BPE "
                         "(GPT-2 style) and Forge's character-level WordLevel tokenizer (with or without number tokens)")
    if max(ids.values()) >= n_vocab:
        raise ForgeError(f"GGUF export: tokenizer has ids up to {max(ids.values())} but the embedding has {n_vocab} rows")
    by_id = {index: token for token, index in ids.items()}
    tokens, types = [], []
    for index in range(n_vocab):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            types.append(TokenType.CONTROL if token in specials else TokenType.USER_DEFINED)
        else:
            tokens.append(spell(token))
            types.append(TokenType.NORMAL)
    special_ids = {name: getattr(tokenizer, f"{name}_token_id") for name in ("bos", "eos", "unk", "pad")}
    probe = tokenizer("a")["input_ids"]
    return GGUFVocab(
        model="gpt2", pre=pre, tokens=tokens, token_types=[int(t) for t in types], merges=merges,
        special_ids={name: index for name, index in special_ids.items() if index is not None},
        add_bos=bool(probe) and probe[0] == tokenizer.bos_token_id,
        add_eos=bool(probe) and probe[-1] == tokenizer.eos_token_id,
        chat_template=getattr(tokenizer, "chat_template", None) or None,
    )


def add_vocab(writer: GGUFWriter, vocab: GGUFVocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    else:  # no merges key (GGUF has no empty arrays): transformers derives them from the scores
        writer.add_token_scores([0.0] * len(vocab.tokens))
    adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
              "unk": writer.add_unk_token_id, "pad": writer.add_pad_token_id}
    for name, index in vocab.special_ids.items():
        adders[name](index)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    writer.add_add_space_prefix(False)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def _number_tokens(backend: dict, ids: dict, added: set) -> bool:
    """Forge's character tokenizer with number tokens: one-character tokens and two-digit ones,
    split by :data:`forgelib.data.tokenizer.NUMBER_PATTERN`."""
    from forgelib.data.tokenizer import NUMBER_PATTERN

    tokens = [token for token in ids if token not in added]
    return (NUMBER_PATTERN in json.dumps(backend.get("pre_tokenizer"))
            and all(len(token) == 1 or (len(token) == 2 and token.isdigit()) for token in tokens))


def _byte_level(backend: dict) -> bool:
    return "ByteLevel" in json.dumps(backend.get("pre_tokenizer")) and "ByteLevel" in json.dumps(backend.get("decoder"))


def _merges(merges: list) -> list[str]:
    """tokenizer.json merges ("a b" strings, or [a, b] pairs in newer files) as llama.cpp's "a b"."""
    return [merge if isinstance(merge, str) else " ".join(merge) for merge in merges]


def _pre(backend: dict) -> str:
    """llama.cpp's name for the split regex: ``smollm`` splits digits one by one first, ``gpt-2``
    is the plain GPT-2 regex (llama.cpp spells it with a hyphen and refuses ``gpt2``)."""
    pre = json.dumps(backend.get("pre_tokenizer"))
    return "smollm" if '"Digits"' in pre and '"individual_digits": true' in pre else "gpt-2"
