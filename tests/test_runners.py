"""One loader for every model kind: a specialized directory or container answers with per-prompt
SVF experts (forge eval, forge test, forge serve), the container carries the experts, a plain
model is unchanged."""

import json

import pytest
import torch
from typer.testing import CliRunner

from forgelib.cli import app
from forgelib.compress.loader import model_dir_side_files
from forgelib.data.tasks import load_tasks
from forgelib.eval.evaluate import evaluate_model
from forgelib.eval.generate import greedy_answers
from forgelib.models.hf import load_model, save_model
from forgelib.runners import SpecializedRunner, load_runner
from forgelib.serve import ModelServer, Options
from forgelib.specialize import svf
from forgelib.specialize.model import SIDE_EXPERTS, SpecializedModel, encode_side_files


@pytest.fixture(scope="module")
def specialized(tiny_trained, tiny_data, tmp_path_factory):
    """The tiny model with two random experts (string families) and a random dispatcher, saved
    as a specialized directory: the experts change answers, so adaptation is observable."""
    model, tokenizer = load_model(tiny_trained[0])
    factors = svf.compute_svd(model)
    g = torch.Generator().manual_seed(0)
    experts = {f: {n: 2.0 * torch.randn(fa.s.shape, generator=g) for n, fa in factors.items()} for f in ("string", "other")}
    dispatcher = {n: torch.zeros(fa.s.shape) for n, fa in factors.items()}
    side = encode_side_files({"families": list(experts), "labels": {"string": "s", "other": "o"}, "max_mult": 2.0,
                              "weights": list(factors)}, experts, dispatcher)
    out = tmp_path_factory.mktemp("specialized") / "model"
    save_model(model, tokenizer, out, {"name": "tiny specialized"})
    for name, data in side.items():
        (out / name).write_bytes(data)
    return out


def test_specialized_directory_runs_adapted_and_plain_load_is_the_baked_model(specialized, tiny_trained, tiny_data):
    runner = load_runner(specialized)
    assert isinstance(runner, SpecializedRunner) and runner.kind == "specialized"
    tasks = load_tasks(tiny_data)
    adapted = runner.evaluate(tasks, split="test")
    spec = SpecializedModel.load(specialized)
    assert adapted["mean"] == pytest.approx(spec.evaluate(tasks, split="test")["mean"])
    plain_model, tok = load_model(specialized)
    plain = evaluate_model(plain_model, tok, tasks, split="test")
    base = evaluate_model(*load_model(tiny_trained[0]), tasks, split="test")
    assert plain["mean"] == pytest.approx(base["mean"])  # from_pretrained sees the weights only
    assert abs(adapted["mean"] - plain["mean"]) > 0.05  # random experts of scale 2 change the answers


def test_cli_eval_reports_the_adapted_figure(specialized, tiny_data):
    result = CliRunner().invoke(app, ["eval", str(specialized), "--data", str(tiny_data), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    spec = SpecializedModel.load(specialized)
    assert body["mean"] == pytest.approx(spec.evaluate(load_tasks(tiny_data), split="test")["mean"])
    assert "adapted" in body


def test_cli_test_streams_the_dispatched_experts_answer(specialized, tiny_data):
    prompt = list(load_tasks(tiny_data)["reverse"]["test"])[0]["prompt"]
    spec = SpecializedModel.load(specialized)
    want = spec.answers([prompt], max_new_tokens=8)[0]
    result = CliRunner().invoke(app, ["test", "--model-path", str(specialized), "--prompt", prompt,
                                      "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == want.strip()


def test_the_container_carries_the_experts_and_adapts_after_decoding(specialized, tmp_path):
    config, files = model_dir_side_files(specialized)
    assert SIDE_EXPERTS in files and files[SIDE_EXPERTS] == (specialized / SIDE_EXPERTS).read_bytes()
    # one flat fp16 tensor per expert: 2 bytes a value, plus a header of a few hundred bytes
    n_values = 3 * sum(int(f.s.numel()) for f in SpecializedModel.load(specialized).svd.values())
    assert 2 * n_values < len(files[SIDE_EXPERTS]) < 2 * n_values + 600
    from forgelib.compress.config import CompressConfig
    from forgelib.compress.pipeline import compress_model

    compress_model(specialized, tmp_path / "c", CompressConfig(), stages=1)
    runner = load_runner(tmp_path / "c" / "stage1")
    assert runner.kind == "specialized"
    decoded = runner.model.state_dict()
    name = next(iter(runner.spec.svd))
    factors = runner.spec.svd[name]
    rebuilt = factors.U @ torch.diag(factors.s) @ factors.Vh
    assert torch.allclose(rebuilt, decoded[name], atol=1e-4)  # the SVD is of the decoded weights


def test_serve_applies_the_prompts_expert(specialized, tiny_data):
    runner = load_runner(specialized)
    prompt = list(load_tasks(tiny_data)["copy"]["test"])[0]["prompt"]
    server = ModelServer(runner.model, runner.tokenizer, model_id="m", adapt=runner.adapt)
    ids = runner.tokenizer(prompt)["input_ids"]
    text = "".join(p.text for p in server.generate(Options(ids, 8, 0.0, 0, [], False)))
    assert text == runner.spec.answers([prompt], max_new_tokens=8)[0]
    plain = ModelServer(runner.model, runner.tokenizer, model_id="m")
    plain_text = "".join(p.text for p in plain.generate(Options(ids, 8, 0.0, 0, [], False)))
    assert plain_text == greedy_answers(runner.model, runner.tokenizer, [prompt], max_new_tokens=8)[0]


def test_cli_agent_eval_scores_a_design_and_rejects_a_bad_one(specialized, tiny_data, tmp_path):
    direct = tmp_path / "direct.json"
    direct.write_text(json.dumps({"name": "direct", "blocks": [{"block": "Generate", "k": 1, "temperature": 0}]}))
    result = CliRunner().invoke(app, ["agent", "eval", "--design", str(direct), "--model-path", str(specialized),
                                      "--data", str(tiny_data), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    model, tok = load_model(specialized)
    rows = [r for t in load_tasks(tiny_data).values() for r in t["test"]]
    answers = greedy_answers(model, tok, [r["prompt"] for r in rows], max_new_tokens=12)
    assert body["accuracy"] == pytest.approx(sum(a == r["answer"] for a, r in zip(answers, rows)) / len(rows))
    assert body["calls_per_item"] == 1.0 and body["items"] == len(rows)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "blocks": [{"block": "Route", "expert": "poetry"},
                                                        {"block": "Generate", "k": 1, "temperature": 0}]}))
    result = CliRunner().invoke(app, ["agent", "run", "--design", str(bad), "--model-path", str(specialized),
                                      "--prompt", "cpy:ab="])
    assert result.exit_code == 2 and "unknown expert 'poetry'" in result.output
