"""A character-level tokenizer in Hugging Face layout.

Every character of the task alphabet is one token, so digits, letters and brackets are seen
one at a time (sub-word merges would hide the carry structure of addition). Built with
``tokenizers`` and wrapped as ``PreTrainedTokenizerFast`` so ``save_pretrained`` /
``AutoTokenizer.from_pretrained`` work like for any hub model.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
"""Ids 0..3 in this order; the model config uses pad=0, bos=1, eos=2."""

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz+-*%=:()[] "


NUMBER_PATTERN = r"(?<![0-9])[0-9]{1,2}(?![0-9])|."
"""With ``number_tokens``: a run of one or two digits that stands alone is one token (``59``,
``07``); longer runs stay one token per digit."""


def build_char_tokenizer(alphabet: str = ALPHABET, number_tokens: bool = False) -> PreTrainedTokenizerFast:
    """Characters of ``alphabet`` as tokens; with ``number_tokens`` also every one- and two-digit
    string (``00``..``99``) as a token of its own, used for digit runs of at most two digits.

    The second form is the Grokfast paper's setting (each residue one token) written as a general
    rule rather than a task's: 3+-digit runs (sums, sort and parity strings) keep their digits.
    ``prepare.number_tokens`` chooses it for the pipeline (``bench/grok_modular.py --number-tokens``
    for the benchmark). Its costs: a GGUF reader cannot reproduce the split exactly (runs of 3+
    digits tokenize differently there, see :mod:`forgelib.export.gguf_vocab`), and teacher-forced
    exact match is only a lower bound on greedy decoding's, which may spell ``48`` as ``4`` ``8``.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in dict.fromkeys(alphabet):
        vocab[ch] = len(vocab)
    if number_tokens:
        for text in [str(n) for n in range(10)] + [f"{n:02d}" for n in range(100)]:
            vocab.setdefault(text, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(NUMBER_PATTERN if number_tokens else "."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
