"""BitNet b1.58 QAT in the Forge loop (train.bitnet): the saved model is ternary, the codec packs
it bit for bit, the lambda warm-up, the loss falls, and a killed QAT run resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from forgelib.compress.codecs import bitnet158
from forgelib.compress.codecs.ternary_pack import PACKINGS
from forgelib.configtools import from_dict
from forgelib.errors import ForgeError
from forgelib.train import bitnet_qat
from forgelib.train import checkpoint as ckpt
from forgelib.train import forge_loop
from forgelib.train.config import TrainConfig
from forgelib.train.task_stream import TaskStream

from conftest import tiny_model

QAT = {
    "max_steps": 30, "batch_size": 16, "lr": 3e-3, "eval_every": 10, "log_every": 5, "checkpoint_every": 10,
    "eval_limit": 16, "grokfast": {"enabled": True},
    "bitnet": {"enabled": True, "warmup_steps": 10},
}
QUANTIZED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def run(tmp: Path, tasks, tokenizer, params: dict, name: str) -> dict:
    cfg = from_dict(TrainConfig, params, "train")
    metrics = forge_loop.train_model(tiny_model(tokenizer), tokenizer, tasks, cfg, out_dir=tmp / name / "model",
                                     checkpoint_dir=tmp / name / "ckpt", metrics_dir=tmp / name / "metrics")
    return {"metrics": metrics, "weights": load_file(str(tmp / name / "model" / "model.safetensors"))}


def quantized(weights: dict) -> dict:
    return {n: w for n, w in weights.items() if n.split(".")[-2] in QUANTIZED}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tasks, tokenizer):
    # Module fixtures are built before conftest's per-test one-thread fixture, and the resumed run
    # must see the same thread count to be bit-identical.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("qat")
    yield tmp, run(tmp, tasks, tokenizer, QAT, "full")
    torch.set_num_threads(threads)


@pytest.mark.parametrize("step,warmup,lam", [(0, 10, 0.0), (5, 10, 0.5), (10, 10, 1.0), (29, 10, 1.0), (0, 0, 1.0)])
def test_warmup_lambda_is_0_at_step_0_and_1_after_warmup_steps(step, warmup, lam):
    assert bitnet_qat.warmup_lambda(step, warmup) == lam


def test_saved_linear_weights_are_ternary_and_the_rest_is_not(uninterrupted):
    tmp, full = uninterrupted
    ternary = quantized(full["weights"])
    assert len(ternary) == 2 * len(QUANTIZED) == full["metrics"]["bitnet"]["quantized_modules"]
    latent = load_file(str(ckpt.latest_checkpoint(tmp / "full" / "ckpt") / "model.safetensors"))
    for name, w in ternary.items():
        scale = w.abs().max()
        assert len(torch.unique(w)) <= 3 and set(torch.unique(w / scale).tolist()) <= {-1.0, 0.0, 1.0}, name
        # the checkpoint keeps the latent fp weights; the saved model is their ternarization
        assert len(torch.unique(latent[name])) > 3, name
        assert torch.equal(w, bitnet158.absmean_ternary(latent[name])[0] * latent[name].abs().mean()), name
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        assert len(torch.unique(full["weights"][name])) > 3, name


@pytest.mark.parametrize("packing", PACKINGS)
def test_bitnet158_codec_packs_the_qat_model_bit_for_bit(uninterrupted, packing):
    _, full = uninterrupted
    config = bitnet158.BitNetConfig(packing=packing)
    for name, w in quantized(full["weights"]).items():
        decoded = bitnet158.decode(bitnet158.encode(w, config))
        assert torch.equal(decoded, w) and torch.equal(decoded.view(torch.int32), w.view(torch.int32)), name


def test_codec_scale_is_exact_on_ternary_input_and_the_absmean_otherwise():
    # absmean of 0.5 * [1, 0, -1, 0] is 0.25: the same trits, but a scale that halves the weights
    w = torch.tensor([[0.5, 0.0, -0.5, 0.0]])
    trits, gamma = bitnet158.absmean_ternary(w)
    assert gamma == 0.5 and torch.equal(trits, torch.tensor([[1.0, 0.0, -1.0, 0.0]]))
    assert torch.equal(bitnet158.decode(bitnet158.encode(w, bitnet158.BitNetConfig())), w)
    general = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    trits, gamma = bitnet158.absmean_ternary(general)
    assert torch.equal(gamma, general.abs().mean()) and torch.equal(trits, (general / gamma).round().clamp(-1, 1))
    assert bitnet158.absmean_ternary(torch.zeros(3, 3))[1] == bitnet158.EPS


def test_loss_falls_by_more_than_one_nat_in_30_steps(uninterrupted):
    tmp, _ = uninterrupted
    history = ckpt.read_trainer_state(ckpt.latest_checkpoint(tmp / "full" / "ckpt"))["history"]
    losses = [r["loss"] for r in history]
    # measured: 3.86 (steps 1-5, lambda ramping) -> 2.59 (steps 26-30, fully ternary)
    assert losses[-1] < losses[0] - 1.0, losses
    assert [r["bitnet/lambda"] for r in history][:3] == [0.4, 0.9, 1.0]


def test_resume_after_kill_reproduces_the_uninterrupted_qat_run(uninterrupted, tasks, tokenizer, monkeypatch):
    tmp, full = uninterrupted
    real_sample = TaskStream.sample

    def killed_at_step_25(self, step, *args, **kwargs):
        if step == 25:
            raise KeyboardInterrupt("simulated kill")
        return real_sample(self, step, *args, **kwargs)

    monkeypatch.setattr(TaskStream, "sample", killed_at_step_25)
    with pytest.raises(KeyboardInterrupt):
        run(tmp, tasks, tokenizer, QAT, "killed")
    monkeypatch.setattr(TaskStream, "sample", real_sample)
    resumed = run(tmp, tasks, tokenizer, QAT, "killed")
    assert resumed["metrics"]["resumed_from"] == 20
    assert_close(resumed["metrics"]["final_loss"], full["metrics"]["final_loss"], rtol=0, atol=0)
    for name, tensor in full["weights"].items():
        assert_close(resumed["weights"][name], tensor, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("params, message", [
    ({"max_steps": 10, "bitnet": {"enabled": True, "warmup_steps": 10}},
     "train.bitnet.warmup_steps: expected an integer < max_steps (10)"),
    ({"bitnet": {"warmup_steps": -1}}, "train.bitnet.warmup_steps"),
    ({"bitnet": {"modules": ["lm_head"]}}, "train.bitnet.modules"),
    ({"bitnet": {"modules": []}}, "train.bitnet.modules"),
])
def test_bad_bitnet_params_name_the_key(params, message):
    with pytest.raises(ForgeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_dict(TrainConfig, params, "train")


def test_fp_run_is_untouched_by_the_switch(tmp_path, tasks, tokenizer):
    params = {**QAT, "max_steps": 4, "checkpoint_every": 0, "bitnet": {"warmup_steps": 10}}
    off = run(tmp_path, tasks, tokenizer, params, "off")
    assert "bitnet" not in off["metrics"]
    assert all(len(torch.unique(w)) > 3 for w in quantized(off["weights"]).values())
