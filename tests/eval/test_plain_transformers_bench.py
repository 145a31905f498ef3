"""bench/plain_transformers_eval.py: plain transformers gives Forge's own evaluation, task by task."""

import json

import pytest

from forgelib.data.tasks import load_tasks
from forgelib.eval.evaluate import evaluate_model
from forgelib.models.hf import load_model


def test_plain_transformers_scores_equal_forge_eval(tiny_trained, tiny_data, tmp_path, load_bench):
    bench = load_bench("plain_transformers_eval")
    model_dir, _ = tiny_trained
    model, tokenizer = load_model(model_dir)
    forge = evaluate_model(model, tokenizer, load_tasks(tiny_data), split="test")
    out = tmp_path / "plain.json"
    assert bench.main(["--models", f"tiny={model_dir}", "--data", str(tiny_data), "--json-out", str(out)]) == 0
    plain = json.loads(out.read_text())["models"]["tiny"]
    assert plain["tasks"] == {name: pytest.approx(r["exact_match"], abs=0) for name, r in forge["tasks"].items()}
    assert plain["mean"] == pytest.approx(forge["mean"], abs=0)
    assert 0.0 < plain["mean"] < 1.0  # a partly trained model: the comparison is not 0 == 0 or 1 == 1


def test_a_container_or_missing_dir_exits_2(tmp_path, tiny_data, load_bench, capsys):
    bench = load_bench("plain_transformers_eval")
    assert bench.main(["--models", f"x={tmp_path}", "--data", str(tiny_data)]) == 2
    assert "not a Hugging Face model directory" in capsys.readouterr().err
    assert bench.main(["--models", f"x={tmp_path}", "--data", str(tmp_path / "nowhere")]) == 2
    assert "--data:" in capsys.readouterr().err
