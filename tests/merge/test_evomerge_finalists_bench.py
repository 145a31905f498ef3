"""bench/evomerge_finalists.py: re-scores the search's best recipes on whole splits, as Forge evaluates."""

import json
import math

import pytest
import yaml

from forgelib.data.tasks import load_tasks
from forgelib.eval.evaluate import fast_mean_exact_match
from forgelib.models.hf import load_model


def passthrough(model: str, layers: list[int], scale: float | None = None) -> dict:
    slices = []
    for layer in layers:
        source = {"model": model, "layer_range": [layer, layer + 1]}
        if scale is not None:
            source["parameters"] = {"scale": [{"filter": "mlp.down_proj", "value": scale}]}
        slices.append({"sources": [source]})
    return {"merge_method": "passthrough", "slices": slices, "dtype": "float32"}


def test_finalists_are_rescored_on_whole_splits(tiny_trained, tiny_data, tmp_path, load_bench):
    bench = load_bench("evomerge_finalists")
    model_dir, _ = tiny_trained
    parent = str(model_dir)
    recipes = {  # the tiny model has 1 layer: itself, a scaled copy, a 2-layer stack
        "same": (passthrough(parent, [0]), 0.3),
        "scaled": (passthrough(parent, [0], scale=0.25), 0.5),
        "stack": (passthrough(parent, [0, 0]), 0.4),
        "worst": (passthrough(parent, [0], scale=0.5), 0.1),
    }
    state = tmp_path / "state"
    state.mkdir()
    (state / "cache.json").write_text(json.dumps({k: {"fitness": f, "recipe": r} for k, (r, f) in recipes.items()}))
    shipped = tmp_path / "recipe.yaml"
    shipped.write_text(yaml.safe_dump(recipes["scaled"][0]))
    out = tmp_path / "finalists.json"
    assert bench.main(["--state", str(state), "--data", str(tiny_data), "--shipped", str(shipped),
                       "--top", "3", "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["finalists"]
    assert [r["key"] for r in rows] == ["scaled", "stack", "same"]  # the top 3 by search fitness
    assert [r["layers"] for r in rows] == [1, 2, 1]
    assert [r["shipped"] for r in rows] == [True, False, False]
    assert [r["unchanged_parent"] for r in rows] == [None, None, parent]
    # the unchanged parent scores exactly what Forge's own evaluation gives the parent model
    model, tokenizer = load_model(model_dir)
    tasks = load_tasks(tiny_data)
    scored = {split: fast_mean_exact_match(model, tokenizer, tasks, split=split) for split in ("validation", "test")}
    for split, parent_result in scored.items():
        assert rows[2][split] == pytest.approx(parent_result["mean"], abs=0)
    assert 0.0 < rows[2]["validation"] < 1.0  # a partly trained model: the checks above are not 0 == 0
    # binomial standard error of the family mean (copy and reverse: one family, two tasks), by hand
    parent_val = scored["validation"]
    by_hand = math.sqrt(sum(0.25 * r["exact_match"] * (1 - r["exact_match"]) / r["n"]
                            for r in parent_val["tasks"].values()))
    assert rows[2]["validation_se"] == pytest.approx(by_hand)
    assert result["validation_spread"] == pytest.approx(max(r["validation"] for r in rows) - min(r["validation"] for r in rows))


def test_spearman_and_bad_input(load_bench, tmp_path, tiny_data, capsys):
    bench = load_bench("evomerge_finalists")
    assert bench.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert bench.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    assert bench.spearman([1, 1, 2], [5, 6, 7]) == pytest.approx(math.sqrt(3) / 2)  # tied ranks 0.5, 0.5, 2
    assert bench.spearman([1, 1, 1], [1, 2, 3]) is None
    assert bench.main(["--state", str(tmp_path / "none"), "--data", str(tiny_data)]) == 2
    assert "--state:" in capsys.readouterr().err
    (tmp_path / "cache.json").write_text("{}")
    assert bench.main(["--state", str(tmp_path), "--data", str(tiny_data), "--top", "1"]) == 2
    assert "--top:" in capsys.readouterr().err
