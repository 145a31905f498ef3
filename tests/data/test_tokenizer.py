from forgelib.data.batching import IGNORE, collate, encode
from forgelib.data.tokenizer import build_char_tokenizer


def test_char_tokenizer_round_trip_and_special_ids(tmp_path):
    tok = build_char_tokenizer()
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    ids = tok("rev:abc=")["input_ids"]
    assert ids[0] == 1 and len(ids) == 1 + len("rev:abc=")
    assert tok.decode(ids, skip_special_tokens=True) == "rev:abc="
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("12+3=")["input_ids"] == tok("12+3=")["input_ids"]


def test_loss_only_on_answer_and_eos():
    tok = build_char_tokenizer()
    ids, labels = encode(tok, "1+1=", "2")
    assert len(ids) == len(labels) == 1 + 4 + 1 + 1
    assert labels[:5] == [IGNORE] * 5
    assert labels[5:] == [tok.convert_tokens_to_ids("2"), tok.eos_token_id]
    batch = collate([(ids, labels), encode(tok, "12+13=", "25")], pad_id=0)
    assert batch["input_ids"].shape == (2, 10)
    assert batch["attention_mask"][0].tolist() == [1] * 7 + [0, 0, 0]
    assert batch["labels"][0, 7:].tolist() == [IGNORE] * 3


def test_number_tokens_give_short_numbers_one_token_and_keep_long_runs_as_digits(tmp_path):
    tok = build_char_tokenizer(number_tokens=True)
    char = build_char_tokenizer()
    assert len(tok) == len(char) + 100  # 00..99 beside the alphabet's ten digits
    pieces = lambda text: tok.convert_ids_to_tokens(tok(text)["input_ids"][1:])
    assert pieces("59+86%97=48") == ["59", "+", "86", "%", "97", "=", "48"]
    assert pieces("87*29%97=1") == ["87", "*", "29", "%", "97", "=", "1"]
    assert pieces("96+39=135") == ["96", "+", "39", "=", "1", "3", "5"]
    assert pieces("srt:9402=0249") == list("srt:9402=0249")
    assert pieces("par:07=07") == ["p", "a", "r", ":", "07", "=", "07"]
    # the character ids are the character tokenizer's, so only the new rows differ
    assert tok("rev:abc=")["input_ids"] == char("rev:abc=")["input_ids"]
    # prompt and answer tokenized apart give the ids of the whole text (prompts end in '=')
    ids, _ = encode(tok, "59+86%97=", "48")
    assert ids == tok("59+86%97=48")["input_ids"] + [tok.eos_token_id]
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    for text in ("59+86%97=48", "96+39=135", "srt:94=49"):
        assert again(text)["input_ids"] == tok(text)["input_ids"]
        assert again.decode(again(text)["input_ids"], skip_special_tokens=True) == text


def test_prepare_number_tokens_writes_the_number_token_tokenizer(tmp_path):
    from forgelib.data.config import PrepareConfig
    from forgelib.data.prepare import prepare
    from forgelib.models.hf import load_tokenizer

    stats = prepare(PrepareConfig(tasks=("mod_add",), default_level=1, n_train=20, n_val=5, n_test=5,
                                  number_tokens=True), tmp_path / "data")
    tok = load_tokenizer(tmp_path / "data" / "tokenizer")
    assert stats["vocab_size"] == len(tok) == 151
    assert tok.convert_ids_to_tokens(tok("59+86%97=48")["input_ids"]) == ["<bos>", "59", "+", "86", "%", "97", "=", "48"]
    plain = prepare(PrepareConfig(tasks=("mod_add",), default_level=1, n_train=20, n_val=5, n_test=5), tmp_path / "plain")
    assert plain["vocab_size"] == 51
