"""bench/task_vectors.py's re-trained specialists: disjoint MLP shares and silent replay."""

from types import SimpleNamespace

import torch

from forgelib.base.sft import SFTSettings, train_sft
from forgelib.data.batching import collate, encode_rows
from forgelib.data.tasks import load_tasks
from forgelib.models.build import build_llama, llama_config
from forgelib.models.hf import load_model, load_tokenizer, save_model


def _model(tokenizer, seed=0):
    config = llama_config(vocab_size=len(tokenizer), hidden_size=16, num_layers=2, num_heads=2, intermediate_size=30,
                          max_position_embeddings=32)
    return build_llama(config, seed=seed)


def test_mlp_shares_deal_every_unit_to_exactly_one_specialist(tiny_data, load_bench):
    bench = load_bench("task_vectors")
    model = _model(load_tokenizer(tiny_data / "tokenizer"))
    shares = bench.mlp_unit_shares(model, ["a", "b", "c"], seed=0)
    for layer in range(2):
        stacked = torch.stack([shares[n][layer] for n in "abc"]).int()
        assert stacked.sum(0).tolist() == [1] * 30
        assert sorted(int(shares[n][layer].sum()) for n in "abc") == [10, 10, 10]
    assert not torch.equal(shares["a"][0], shares["a"][1])  # a fresh deal per layer


def test_masked_training_moves_only_its_own_units(tiny_data, load_bench):
    bench = load_bench("task_vectors")
    tokenizer = load_tokenizer(tiny_data / "tokenizer")
    model = _model(tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    share = bench.mlp_unit_shares(model, ["a", "b"], seed=0)["a"]
    bench._mask_to_share(model, share)
    tasks = load_tasks(tiny_data)
    rows = [r for t in tasks.values() for r in t["train"]]
    train_sft(model, encode_rows(tokenizer, rows), SFTSettings(steps=20, lr=1e-2, batch_size=32), pad_id=tokenizer.pad_token_id)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"model.layers.{i}.mlp.{p}.weight" for i in range(2) for p in ("gate_proj", "up_proj", "down_proj")}
    for i in range(2):
        own = share[i]
        mlp = f"model.layers.{i}.mlp"
        for name, rows_dim in (("gate_proj", 0), ("up_proj", 0), ("down_proj", 1)):
            delta = (after[f"{mlp}.{name}.weight"] - before[f"{mlp}.{name}.weight"]).abs()
            per_unit = delta.sum(dim=1 - rows_dim)
            assert float(per_unit[~own].max()) == 0.0
            assert float(per_unit[own].min()) > 0.0


def _relative_drift(bench, model, ancestor, tokenizer, rows) -> float:
    batch = collate(encode_rows(tokenizer, rows), tokenizer.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "output_hidden_states": True}
    mask = batch["attention_mask"].unsqueeze(-1).float()
    with torch.no_grad():
        moved, held = model(**inputs).hidden_states[1:], ancestor(**inputs).hidden_states[1:]
    return float(bench.relative_hidden_distance(moved, held, mask))


def test_silent_replay_holds_the_other_familys_hidden_states(two_family_data, tmp_path, load_bench):
    bench = load_bench("task_vectors")
    tokenizer = load_tokenizer(two_family_data / "tokenizer")
    save_model(_model(tokenizer), tokenizer, tmp_path / "ancestor", {"name": "tiny-ancestor"})
    tasks = load_tasks(two_family_data)
    cfg = SimpleNamespace(seed=0, specialists={"string": SimpleNamespace(family="string")},
                          specialist=SimpleNamespace(steps=40, lr=1e-2, batch_size=32, weight_decay=0.0, warmup_steps=2))
    ancestor = load_model(tmp_path / "ancestor")[0]
    drift = {}
    for weight in (0.0, 100.0):
        bench.silent_specialist(cfg, tasks, tmp_path / "ancestor", tmp_path / f"w{weight}", "string", 1e-2, weight)
        model = load_model(tmp_path / f"w{weight}" / "string")[0]
        drift[weight] = _relative_drift(bench, model, ancestor, tokenizer, tasks["parity"]["validation"])
    # both fine-tunes moved the weights; held to the ancestor, the parity activations move >= 100x less
    assert drift[0.0] > 0.01
    assert drift[100.0] * 100 <= drift[0.0], drift
