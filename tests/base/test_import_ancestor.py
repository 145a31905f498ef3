"""The ancestor stage importing an HF directory: exact copy, and the import check as its curve."""

import json

import pytest
from safetensors.torch import load_file

from forgelib.base.config import BaseConfig
from forgelib.errors import ForgeError
from forgelib.base.build import build_ancestor


def test_directory_import_copies_weights_and_records_the_check(tiny_trained, tiny_data, tmp_path):
    model_dir, _ = tiny_trained
    out, metrics = tmp_path / "ancestor", tmp_path / "metrics"
    build_ancestor(BaseConfig(source=str(model_dir)), tiny_data, out, metrics)
    a, b = load_file(model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    # DVC declares the curves directory as the stage's plots output: it must exist after an import.
    rows = (metrics / "plots" / "metrics" / "max_abs_logit_diff.tsv").read_text().split()
    assert rows[:2] == ["step", "max_abs_logit_diff"] and float(rows[-1]) == 0.0
    summary = json.loads((metrics / "metrics.json").read_text())
    assert summary["max_abs_logit_diff"] == 0.0 and summary["tokenizer_match"] == 1


def test_missing_source_directory_is_a_clear_error(tiny_data, tmp_path):
    with pytest.raises(ForgeError, match="base.source model directory not found"):
        build_ancestor(BaseConfig(source=str(tmp_path / "nope")), tiny_data, tmp_path / "a", tmp_path / "m")
    assert not (tmp_path / "a").exists()
