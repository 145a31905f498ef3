"""bench/grok_modular.py --number-tokens: a fresh Llama whose tokenizer gives each 1-2 digit number one token."""

import json

import pytest

from forgelib.data.config import PrepareConfig
from forgelib.data.prepare import prepare


@pytest.fixture(scope="module")
def modular_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "data"
    prepare(PrepareConfig(tasks=("mod_add", "mod_mul", "copy"), default_level=1, levels={"mod_add": 4, "mod_mul": 4},
                          n_train=200, n_val=20, n_test=20), out)
    return out


def test_number_tokens_run_learns_and_labels_its_start_as_initial(load_bench, modular_data, tiny_trained, capsys):
    bench = load_bench("grok_modular")
    ancestor, _ = tiny_trained
    rc = bench.main(["--data", str(modular_data), "--ancestor", str(ancestor), "--fresh", "32", "1", "2", "64",
                     "--number-tokens", "--grokfast", "--modular-weight", "1.0", "--train-fraction", "0.02",
                     "--batch-size", "64", "--lr", "3e-3", "--max-steps", "60", "--eval-every", "20",
                     "--full-eval-every", "60", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    # the scores before training are a fresh model's, not the ancestor's, and nothing is a retention of it
    assert "initial" in result and "ancestor" not in result
    arm = result["arms"]["grokfast"]
    assert arm["retention_vs_ancestor"] is None
    assert result["modular_train_rows"] == {"mod_add": 188, "mod_mul": 186}  # 2% of 9,409 and 9,312 pairs
    losses = [row["loss"] for row in arm["history"]]
    assert losses[-1] < losses[0] - 0.5  # it fits its train pairs (mean loss per 20 steps, nats)


def test_number_tokens_need_a_fresh_model(load_bench, modular_data, tiny_trained):
    bench = load_bench("grok_modular")
    with pytest.raises(SystemExit, match="--number-tokens needs --fresh"):
        bench.main(["--data", str(modular_data), "--ancestor", str(tiny_trained[0]), "--number-tokens"])
