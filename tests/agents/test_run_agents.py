"""The agents stage's driver with the memory arms and the ADAS search off (the SmolLM2 profile's setting)."""

import torch

from forgelib.agents.config import AdasConfig, AgentsConfig, MemoryConfig, ToolArmsConfig
from forgelib.agents.run import run_agents
from forgelib.data.config import PrepareConfig
from forgelib.data.prepare import prepare
from forgelib.io import read_json
from forgelib.models.build import build_llama, llama_config
from forgelib.models.hf import load_tokenizer, save_model


def test_tools_only_run_writes_every_declared_output(tmp_path):
    """dvc.yaml declares models/agents, agents/ and checkpoints/agents: with ADAS off the state
    directory must still exist, or DVC fails the finished stage (it did on the real profile)."""
    torch.set_num_threads(1)
    data = tmp_path / "data"
    prepare(PrepareConfig(tasks=("add", "copy"), default_level=1, n_train=120, n_val=10, n_test=10), data)
    tokenizer = load_tokenizer(data / "tokenizer")
    config = llama_config(vocab_size=len(tokenizer), hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                          max_position_embeddings=64)
    save_model(build_llama(config, seed=0), tokenizer, tmp_path / "input", {"name": "tiny"})
    cfg = AgentsConfig(tools=ToolArmsConfig(steps=4, n_generated=20, n_test=4, batch_size=8),
                       memory=MemoryConfig(enabled=False), adas=AdasConfig(enabled=False))
    out = {"out_dir": tmp_path / "models" / "agents", "agents_dir": tmp_path / "agents",
           "state_dir": tmp_path / "checkpoints" / "agents", "metrics_path": tmp_path / "metrics" / "agents.json"}
    metrics = run_agents(cfg, data_dir=data, input_dir=tmp_path / "input", **out)
    assert out["state_dir"].is_dir() and out["agents_dir"].is_dir()
    assert (out["out_dir"] / "config.json").is_file()
    assert metrics["memory"] is None and metrics["adas"] is None
    assert set(metrics["tools"]) == {"no_tool", "mcp", "wrong_tool", "oracle_call"}
    assert read_json(out["metrics_path"]) == metrics
