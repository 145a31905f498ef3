"""Prompt baking on a tiny model whose instruction really helps: ``r `` in front of ``s:abc=`` makes it
reverse (``cba``) instead of copying. Baking ``r `` must make the model reverse without it."""

import math
import random

import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from forgelib.base.sft import SFTSettings, train_sft
from forgelib.configtools import from_dict
from forgelib.data.batching import encode_rows
from forgelib.data.tokenizer import build_char_tokenizer
from forgelib.errors import ForgeError
from forgelib.models.build import build_llama, llama_config
from forgelib.specialize.bake import bake, candidates, make_student, target_tasks, token_kl
from forgelib.specialize.bake_config import BakeConfig

KEY = "specialize.bake"


def _rows(task, family, template, answer_of, n, rng):
    out = []
    for _ in range(n):
        word = "".join(rng.choice("abcdef") for _ in range(rng.randint(2, 4)))
        out.append({"prompt": template.format(word), "answer": answer_of(word), "task": task, "family": family, "level": 1})
    return out


def _split(task, family, template, answer_of, rng):
    return DatasetDict({split: Dataset.from_list(_rows(task, family, template, answer_of, n, rng))
                        for split, n in (("train", 300), ("validation", 60), ("test", 100))})


@pytest.fixture(scope="module")
def instructed():
    """(model, tokenizer, tasks): a 1-layer Llama that copies ``s:w=`` and reverses ``r s:w=``."""
    torch.set_num_threads(1)
    rng = random.Random(0)
    tokenizer = build_char_tokenizer()
    train = (_rows("s", "string", "s:{}=", lambda w: w, 800, rng) + _rows("s", "string", "r s:{}=", lambda w: w[::-1], 800, rng)
             + _rows("keep", "other", "k:{}=", lambda w: w, 800, rng))
    config = llama_config(vocab_size=len(tokenizer), hidden_size=48, num_layers=1, num_heads=2, intermediate_size=96,
                          max_position_embeddings=32)
    model = build_llama(config, seed=0)
    train_sft(model, encode_rows(tokenizer, train), SFTSettings(steps=400, lr=1e-2, batch_size=64), pad_id=tokenizer.pad_token_id)
    tasks = {"flip": _split("flip", "string", "s:{}=", lambda w: w[::-1], rng),
             "keep": _split("keep", "other", "k:{}=", lambda w: w, rng)}
    return model.eval(), tokenizer, tasks


CFG = dict(target="flip", shots=(), instructions=("r ",), steps=250, prompts=256, trajectories=2, batch_size=32,
           curve_points=4, lr=1e-2)


@pytest.fixture(scope="module")
def baked(instructed, tmp_path_factory):
    model, tokenizer, tasks = instructed
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plots = tmp_path_factory.mktemp("plots")
    result = bake(model, tokenizer, tasks, BakeConfig(**CFG), seed=0, plots_dir=plots)
    return result, before, plots


def test_baked_model_recovers_the_instruction_without_it(baked):
    m = baked[0].metrics
    assert m["prefix"] == "r " and m["prefix_helps"] and m["merged"]
    assert m["validation"]["gain"] >= 0.4
    assert m["prompted_base"] - m["unprompted_base"] >= 0.4  # measured 0.57
    assert m["recovered_fraction"] >= 0.8  # measured 0.91
    assert m["baked"] >= m["unprompted_base"] + 0.8 * m["gain"]


def test_baking_cuts_heldout_kl_to_the_prompted_model(baked):
    m = baked[0].metrics
    assert m["kl_base"] > 0.5  # the instruction changes the answer distribution a lot (1.85 measured)
    assert m["kl_baked"] < 0.1 * m["kl_base"]  # 0.063 measured
    assert m["kl_history"][-1]["kl"] < 0.2 * m["kl_history"][0]["kl"]
    # Drift, on the off-target family: baked on s: prompts alone, the tiny model's LoRA also reverses
    # k: prompts (copy accuracy 0.78 -> 0.06 measured), and the KL shows it (1.70 nats per token).
    assert m["drift_tasks"] == ["keep"]
    assert m["off_target_baked"] < m["off_target_base"] - 0.3
    assert math.isfinite(m["drift_kl"]) and m["drift_kl"] > 0.5


def test_half_baking_curve_rises_and_is_written(baked):
    result, _, plots = baked
    steps = [p["step"] for p in result.curve]
    assert steps == BakeConfig(**CFG).curve_steps() == [0, 83, 167, 250]
    assert result.curve[-1]["accuracy"] >= result.curve[0]["accuracy"] + 0.3
    lines = (plots / "bake_curve.tsv").read_text().splitlines()
    assert lines[0] == "step\taccuracy" and len(lines) == 1 + len(steps)
    assert float(lines[-1].split("\t")[1]) == pytest.approx(result.curve[-1]["accuracy"])


def test_input_model_is_not_mutated(instructed, baked):
    model = instructed[0]
    _, before, _ = baked
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert not any("lora" in n for n, _ in model.named_modules())


def test_merged_model_is_plain_transformers_and_round_trips(instructed, baked, tmp_path):
    merged = baked[0].model
    assert type(merged) is LlamaForCausalLM
    assert not any("lora" in n for n in merged.state_dict())
    assert baked[0].metrics["merge_max_abs_logit_diff"] < 1e-4
    merged.save_pretrained(tmp_path, safe_serialization=True)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = instructed[1](["s:abcd=", "k:fedc="], return_tensors="pt")  # same length: no pad positions
    with torch.no_grad():
        assert (loaded(**ids).logits - merged(**ids).logits).abs().max() < 1e-5


def test_merge_equals_the_adapter(instructed):
    """With a non-zero LoRA (B starts at zero), merge_and_unload gives the adapter's logits."""
    model, tokenizer, _ = instructed
    student = make_student(model, BakeConfig(rank=4, alpha=8.0))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))
    ids = tokenizer(["s:abc=", "k:ffe=", "r s:de="], return_tensors="pt", padding=True)
    with torch.no_grad():
        adapted = student(**ids).logits
        plain = model(**ids).logits
        merged = student.merge_and_unload()(**ids).logits
    assert (adapted - plain).abs().max() > 0.1  # the adapter does something
    assert (merged - adapted).abs().max() < 1e-4


def test_student_init_depends_on_the_seed_only(instructed):
    model = instructed[0]

    def lora_a(seed):
        torch.rand(7)  # moves the global generator: the LoRA init must not read it
        student = make_student(model, BakeConfig(), seed=seed)
        return torch.cat([p.flatten() for n, p in student.named_parameters() if "lora_A" in n])

    assert torch.equal(lora_a(0), lora_a(0))
    assert not torch.equal(lora_a(0), lora_a(1))


def test_unhelpful_prefix_is_measured_but_not_merged(instructed):
    """A prefix under min_gain is still baked and reported, but the output weights are the input's."""
    model, tokenizer, tasks = instructed
    cfg = BakeConfig(**{**CFG, "steps": 10, "warmup_steps": 2, "curve_points": 2, "prompts": 32, "min_gain": 1.0, "eval_limit": 20, "drift_limit": 10})
    result = bake(model, tokenizer, tasks, cfg, seed=0)
    assert not result.metrics["prefix_helps"] and not result.metrics["merged"]
    assert result.model is not model
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    assert 0.0 <= result.metrics["baked"] <= 1.0


def test_token_kl_matches_hand_computation():
    p = torch.tensor([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    q = torch.tensor([[0.25, 0.5, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    kl = token_kl(p.log() + 3.0, q.log() - 1.0)  # logits are softmax-invariant to a shift
    assert kl[0].item() == pytest.approx(0.5 * math.log(2) + 0.25 * math.log(0.5), abs=1e-6)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-6)


def test_candidates_fit_the_positions(instructed):
    _, tokenizer, tasks = instructed
    cfg = BakeConfig(shots=(1, 3), draws=2, instructions=("r ",))
    targets = target_tasks(tasks, "flip")
    longest = 2 + max(len(r["prompt"]) + len(r["answer"]) for s in tasks["flip"].values() for r in s)
    roomy = candidates(tokenizer, tasks, targets, cfg, seed=0, max_positions=64)
    assert len(roomy) == 5 and sum(c.kind == "k-shot" for c in roomy) == 4
    assert all(len(c.prefix) + longest <= 64 for c in roomy)
    tight = candidates(tokenizer, tasks, targets, cfg, seed=0, max_positions=longest + 12)
    assert [c.prefix for c in tight if c.kind == "k-shot"] == [c.prefix for c in roomy if c.kind == "k-shot" and len(c.prefix) <= 12]
    assert any(c.prefix == "r " for c in tight) and len(tight) < len(roomy)
    with pytest.raises(ForgeError, match=KEY):
        candidates(tokenizer, tasks, targets, cfg, seed=0, max_positions=longest + 1)
    with pytest.raises(ForgeError, match="separator"):
        candidates(tokenizer, tasks, targets, BakeConfig(separator="|"), seed=0, max_positions=64)


def test_auto_target_is_every_family(instructed):
    tasks = instructed[2]
    assert target_tasks(tasks, "auto") == {"string": ["flip"], "other": ["keep"]}
    assert target_tasks(tasks, "other") == {"other": ["keep"]}
    with pytest.raises(ForgeError, match=rf"{KEY}\.target: 'nope'.*valid: auto, other, string"):
        target_tasks(tasks, "nope")


def test_missing_lora_module_names_the_key(instructed):
    with pytest.raises(ForgeError, match=rf"{KEY}\.modules: .*'c_attn'"):
        make_student(instructed[0], BakeConfig(modules=("c_attn",)))


@pytest.mark.parametrize("key, value", [
    ("rank", 0), ("alpha", 0.0), ("steps", 0), ("lr", -1.0), ("temperature", 0.0), ("batch_size", 0),
    ("trajectories", 0), ("prompts", 0), ("min_gain", 1.5), ("curve_points", 1), ("warmup_steps", 10_000),
    ("draws", 0), ("shots", [0]), ("separator", ""), ("target", " "), ("selection_limit", 0), ("modules", []),
])
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ForgeError, match=rf"^{KEY}\.{key}: expected"):
        from_dict(BakeConfig, {key: value}, KEY)


def test_unknown_and_mistyped_keys_are_rejected():
    with pytest.raises(ForgeError, match=rf"{KEY}\.lora_rank: unknown key"):
        from_dict(BakeConfig, {"lora_rank": 4}, KEY)
    with pytest.raises(ForgeError, match=rf"{KEY}\.steps: expected an integer"):
        from_dict(BakeConfig, {"steps": "many"}, KEY)
    cfg = from_dict(BakeConfig, {"shots": [1, 2], "instructions": ["r "]}, KEY)
    assert cfg.shots == (1, 2) and cfg.instructions == ("r ",)
