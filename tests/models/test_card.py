"""One model-card writer: layers merge deeply, the front matter reads back, every writer uses it."""

from __future__ import annotations

from forgelib.data.tokenizer import build_char_tokenizer
from forgelib.models.build import build_llama, llama_config
from forgelib.models.card import merge_cards, read_card, render_card, write_card
from forgelib.models.hf import save_model


def test_merge_is_deep_for_dicts_and_replaces_everything_else():
    writer = {"name": "forge-trained", "params": {"train": {"lr": 3e-4, "steps": 800}}, "tags": ["forge"],
              "metrics": {"validation": {"mean": 0.5}}}
    caller = {"name": "renamed", "params": {"seed": 1, "train": {"steps": 900}}, "tags": ["merge"]}
    card = merge_cards(writer, caller)
    assert card == {"name": "renamed", "params": {"train": {"lr": 3e-4, "steps": 900}, "seed": 1},
                    "tags": ["merge"], "metrics": {"validation": {"mean": 0.5}}}
    assert writer["params"] == {"train": {"lr": 3e-4, "steps": 800}}  # the layers themselves are untouched
    assert merge_cards(None, {"a": 1}, None) == {"a": 1}


def test_card_front_matter_round_trips_and_the_body_has_the_sections(tmp_path):
    write_card(tmp_path, {"name": "m", "description": "A test model.", "params": {"train": {"lr": 0.1}}},
               {"params": {"seed": 7}, "parents": ["a", "b"]})
    front = read_card(tmp_path)
    assert front == {"library_name": "transformers", "tags": ["forge"], "name": "m",
                     "params": {"train": {"lr": 0.1}, "seed": 7}, "parents": ["a", "b"]}
    text = (tmp_path / "README.md").read_text()
    assert "# m\n\nA test model.\n" in text
    assert text.index("## Parents") < text.index("## Params")
    assert render_card({"name": "x"}).startswith("---\nlibrary_name: transformers\ntags:\n- forge\nname: x\n---\n")


def test_save_model_deep_merges_its_card_layers(tmp_path):
    tokenizer = build_char_tokenizer()
    model = build_llama(llama_config(vocab_size=len(tokenizer), hidden_size=16, num_layers=1, num_heads=2), seed=0)
    save_model(model, tokenizer, tmp_path / "m", {"params": {"train": {"steps": 5}}, "metrics": {"loss": 1.0}},
               {"params": {"seed": 3}})
    card = read_card(tmp_path / "m")
    assert card["params"] == {"train": {"steps": 5}, "seed": 3} and card["metrics"] == {"loss": 1.0}
