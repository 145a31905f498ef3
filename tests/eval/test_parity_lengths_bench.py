"""bench/parity_lengths.py: the parity split's length coverage, accuracy per length, the headline ceiling."""

import json

import pytest

from forgelib.config import load_section
from forgelib.data.prepare import build_splits
from forgelib.data.tasks import load_tasks
from forgelib.models.build import build_llama, llama_config
from forgelib.models.hf import load_tokenizer, save_model

SUITE_FAMILIES = {"add": "arithmetic", "parity": "logic", "brackets": "logic", "mod_add": "modular",
                  "mod_mul": "modular", "reverse": "string", "copy": "string", "sort_digits": "string"}


def test_coverage_counts_rows_per_length_and_the_distinct_strings(load_bench):
    bench = load_bench("parity_lengths")
    got = bench.length_coverage({"train": ["0110", "101"], "test": ["01", "11", "000"]})
    assert got == {2: {"distinct": 4, "train": 0, "test": 2}, 3: {"distinct": 8, "train": 1, "test": 1},
                   4: {"distinct": 16, "train": 1, "test": 0}}


def test_accuracy_by_length_and_the_share_of_errors_at_rare_lengths(load_bench):
    bench = load_bench("parity_lengths")
    table = bench.accuracy_by_length([" 01", "10", "111", "000", "0000"], ["01", "11", "110", "000", "0001"])
    assert table == {2: {"n": 2, "hits": 1, "exact_match": 0.5}, 3: {"n": 2, "hits": 1, "exact_match": 0.5},
                     4: {"n": 1, "hits": 0, "exact_match": 0.0}}
    share = bench.short_error_share(table, {2: 0, 3: 10, 4: 60}, rare=50)
    assert share == {"errors": 3, "errors_at_rare_lengths": 2, "share": pytest.approx(2 / 3)}


def test_headline_ceiling_sets_every_other_task_to_one(load_bench):
    bench = load_bench("parity_lengths")
    scores = {t: 0.5 for t in SUITE_FAMILIES} | {"parity": 0.753, "mod_mul": 0.04}
    # (arithmetic 1 + logic (1 + 0.753) / 2 + modular (1 + 0.04) / 2 + string 1) / 4
    assert bench.headline_ceiling(scores, SUITE_FAMILIES, keep=("parity", "mod_mul")) == pytest.approx(0.849125)
    assert bench.headline_ceiling(scores, SUITE_FAMILIES, keep=("parity",)) == pytest.approx((3 + 1.753 / 2) / 4)


def test_the_shipped_suite_holds_every_short_parity_string_out_of_train():
    """The frozen suite's parity split: no train string shorter than 6; val + test hold every one of length <= 5."""
    splits = build_splits("parity", load_section("prepare", "params.yaml"))
    train = {p for p in splits["train"]["prompt"]}
    held_out = {p for s in ("validation", "test") for p in splits[s]["prompt"]}
    assert min(len(p) - len("par:=") for p in train) == 6
    for n in range(2, 6):
        strings = {f"par:{i:0{n}b}=" for i in range(2 ** n)}
        assert strings <= held_out, n
    assert sum(len(a) <= 7 for a in splits["test"]["answer"]) == 89
    assert sum(len(a) <= 7 for a in splits["train"]["answer"]) == 52


def _tiny_model(data, tmp_path):
    tokenizer = load_tokenizer(data / "tokenizer")
    config = llama_config(vocab_size=len(tokenizer), hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                          max_position_embeddings=32)
    out = tmp_path / "m"
    save_model(build_llama(config, seed=0), tokenizer, out, {"name": "tiny", "parents": []})
    return out


def test_main_writes_the_tables_and_runs_an_arm(two_family_data, tmp_path, load_bench):
    bench = load_bench("parity_lengths")
    model = _tiny_model(two_family_data, tmp_path)
    out = tmp_path / "r.json"
    code = bench.main(["--data", str(two_family_data), "--models", f"tiny={model}", "--arms", "bit_copy",
                       "--finetune-from", str(model), "--steps", "3", "--batch-size", "8", "--json-out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    parity = load_tasks(two_family_data)["parity"]
    n_val, n_test = len(parity["validation"]), len(parity["test"])
    coverage = result["coverage"]
    assert sum(c["test"] for c in coverage.values()) == n_test and sum(c["validation"] for c in coverage.values()) == n_val
    assert all(c["train"] + c["validation"] + c["test"] <= c["distinct"] for c in coverage.values())
    test = result["models"]["tiny"]["test"]
    assert sum(r["n"] for r in test["by_length"].values()) == n_test
    assert test["exact_match"] == pytest.approx(sum(r["hits"] for r in test["by_length"].values()) / n_test)
    assert 0.0 <= result["models"]["tiny"]["ceiling_if_others_perfect"] <= 1.0
    arm = result["arms"]["bit_copy"]
    assert arm["steps"] == 3 and sum(r["n"] for r in arm["parity_validation"]["by_length"].values()) == n_val


def test_bad_arguments_exit_2_naming_the_flag(two_family_data, tmp_path, load_bench, capsys):
    bench = load_bench("parity_lengths")
    assert bench.main(["--data", str(two_family_data), "--models", "", "--arms", "dreams"]) == 2
    assert "--arms: unknown arm 'dreams'" in capsys.readouterr().err
    assert bench.main(["--data", str(two_family_data), "--models", f"x={tmp_path / 'nope'}"]) == 2
    assert "--models: x=" in capsys.readouterr().err
