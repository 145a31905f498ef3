"""HF directory export: what transformers loads with no Forge code generates what the source does."""

import json
import subprocess
import sys

from forgelib.compress.loader import load_model_any
from forgelib.export.check import check_rows, greedy
from forgelib.export.run import export_model

# Run in a fresh interpreter that imports transformers only, and says so.
READER = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path, prompts = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForCausalLM.from_pretrained(path).eval()
tokenizer = AutoTokenizer.from_pretrained(path)
out = []
for prompt in prompts:
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    out.append(tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
print(json.dumps({"greedy": out, "forge_imported": any(m.startswith("forgelib") for m in sys.modules)}))
"""


def test_container_as_hf_dir_generates_the_same_in_plain_transformers(container_dir, tiny_data, tmp_path):
    out = tmp_path / "hf"
    report = export_model(container_dir, "hf", out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "generation_config.json",
                                                     "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert report["bytes"] == sum(p.stat().st_size for p in out.iterdir())
    prompts = [row["prompt"] for row in check_rows(tiny_data, 4)]
    run = subprocess.run([sys.executable, "-c", READER, str(out), json.dumps(prompts)], capture_output=True, text=True,
                         check=True)
    plain = json.loads(run.stdout.strip().splitlines()[-1])
    model, tokenizer = load_model_any(container_dir)
    assert plain["forge_imported"] is False
    assert plain["greedy"] == [greedy(model, tokenizer, prompt, 8) for prompt in prompts]


def test_hf_dir_logits_are_the_source_logits(tiny_trained, tiny_data, tmp_path):
    tokenizer = load_model_any(tiny_trained[0])[1]
    report = export_model(tiny_trained[0], "hf", tmp_path / "hf", check_data=tiny_data)
    check = report["check"]
    assert check["max_abs_logit_diff"] == 0.0 and check["top1_agreement"] == 1.0
    assert check["tokenizer_match"] == 1.0 and check["greedy_match"] == 1.0
    assert report["source"]["kind"] == "hf" and report["source"]["bytes"] == (tiny_trained[0] / "model.safetensors").stat().st_size
    rows = check_rows(tiny_data, 8)
    assert check["texts"] == len(rows)
    assert check["positions"] == sum(len(tokenizer(r["prompt"] + r["answer"])["input_ids"]) for r in rows)
