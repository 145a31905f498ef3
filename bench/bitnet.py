"""BitNet b1.58 quantization-aware training (``train.bitnet``) against full precision and PTQ.

Every arm runs the train stage's own Forge loop (params.yaml ``train:``, every controller as
configured, ``max_steps = --steps``) on the train stage's inputs (``data/`` and
``models/evolved``; without that model a 1x ancestor is pretrained first), then is evaluated on
the test split with :func:`forgelib.eval.evaluate.evaluate_model` (``test_mean``: the family mean
of greedy exact match):

- ``fp``: the loop in full precision, the reference;
- ``ptq``: the fp arm ternarized after training by the ``bitnet158`` codec (attention + MLP);
- ``qat_warmup``: QAT with lambda ramped 0 -> 1 over ``--warmup`` steps (the HF 1.58-bit recipe);
- ``qat_step0``: QAT quantized from step 0;
- ``fp_2x_width`` / ``qat_2x_width``: a fresh ancestor at twice the hidden and MLP width,
  pretrained like the ``ancestor`` stage for ``--ancestor-steps`` and not specialised or merged,
  then trained like ``fp`` / ``qat_warmup`` (Nielsen et al. 2025: ternary catches up with full
  precision at about twice the width). Their input is weaker than models/evolved, so compare
  them with each other (``input_test_mean`` is each arm's starting point).

``bytes`` is the size of a real compression stage-1 container (header included): ternary arms
store attention + MLP as packed trits (``bitnet158``, 1.6 bits/weight + one fp32 scale per
tensor) and everything else (embeddings, lm_head, norms) at fp16; fp arms store everything at
fp16. ``test_mean`` is the trained HF model itself (fp32 tables; for ``ptq``, the container);
``container_test_mean`` is the container's. QAT arms also report ``test_mean_int8_act``: the
same weights run with int8 per-token activations, as trained (the plain HF model runs fp
activations). ``stage1_retention`` puts the ``qat_warmup`` model through stage 1 with bitnet158
on attention + MLP and fp32 elsewhere: test mean after / before (1.0 when the codec reproduces
the QAT weights bit for bit, which ``ternary_bit_exact`` checks tensor by tensor). The fp and
qat_warmup arms also carry ``shipped_stage1_noheal``: params.yaml's stage-1 codecs with no heal.

    python bench/bitnet.py --json --out metrics/bitnet.json          # ~10 CPU-minutes, 1 thread
    python bench/bitnet.py --steps 50 --steps-2x 50 --ancestor-steps 50   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from forgelib.base.build import build_ancestor
from forgelib.compress.codecs import bitnet158
from forgelib.compress.config import CodecSpec, CompressConfig, HealConfig, Stage1Config
from forgelib.compress.groups import group_of
from forgelib.compress.run import run_compress
from forgelib.config import load_section
from forgelib.data.tasks import load_tasks
from forgelib.eval.evaluate import evaluate_model
from forgelib.io import write_json
from forgelib.models.hf import load_model
from forgelib.train import bitnet_qat
from forgelib.train.forge_loop import train_model

ARMS = ("fp", "ptq", "qat_warmup", "qat_step0", "qat_2x_width", "fp_2x_width")


def stage1_config(linear: str, rest: str) -> CompressConfig:
    """Stage 1 with ``linear`` on attention + MLP and ``rest`` on embeddings, lm_head and norms."""
    lin, other = CodecSpec.of(linear), CodecSpec.of(rest)
    return CompressConfig(stage1=Stage1Config(attention=lin, mlp=lin, embeddings=other, lm_head=other, norms=other),
                          heal=HealConfig(steps=0), calibration_batches=0)


TERNARY = stage1_config("bitnet158", "fp16")
FP16 = stage1_config("fp16", "fp16")
TERNARY_FP32 = stage1_config("bitnet158", "fp32")  # isolates the ternary part: retention 1.0 if exact


def stage1(model_dir: Path, config: CompressConfig, data_dir: str, work: Path, name: str) -> dict:
    """Compress ``model_dir`` with stage 1 only; its test mean before and after, and real bytes."""
    stats = run_compress(config, data_dir=data_dir, input_dir=model_dir, out_dir=work / f"c-{name}", stages=1)
    return {"input_test_mean": stats["input_test_mean"], "test_mean": stats["stage1"]["test_mean"],
            "bytes": stats["stage1"]["bytes"], "retention": stats["stage1"]["retention"]}


def forge_train(input_dir: Path, data_dir: str, train_cfg, work: Path, name: str) -> tuple[Path, dict]:
    model, tokenizer = load_model(input_dir)
    started = time.process_time()
    loop = train_model(model, tokenizer, load_tasks(data_dir), train_cfg, out_dir=work / name,
                       checkpoint_dir=work / f"ckpt-{name}", metrics_dir=work / f"live-{name}")
    return work / name, {"steps": train_cfg.max_steps, "train_cpu_seconds": time.process_time() - started,
                         "final_loss": loop["final_loss"]}


def int8_activation_mean(model_dir: Path, data_dir: str, bitnet_cfg) -> float:
    """Test mean of a QAT model run as trained: ternary weights (a fixed point of the quantizer)
    and int8 per-token activations (BitLinear at lambda = 1)."""
    model, tokenizer = load_model(model_dir)
    bitnet_qat.attach(model, bitnet_cfg)
    return evaluate_model(model, tokenizer, load_tasks(data_dir), split="test")["mean"]


def ternary_bit_exact(model_dir: Path) -> bool:
    """Every attention/MLP weight survives a bitnet158 encode + decode bit for bit."""
    config = bitnet158.BitNetConfig()
    for name, w in load_file(str(model_dir / "model.safetensors")).items():
        if group_of(name, w.dim()) in ("attention", "mlp"):
            decoded = bitnet158.decode(bitnet158.encode(w, config))
            if not torch.equal(decoded.view(torch.int32), w.view(torch.int32)):
                return False
    return True


def run_bench(args) -> dict:
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-bitnet-"))
    train = load_section("train", args.params)
    base = load_section("base", args.params)
    fp_cfg = dataclasses.replace(train, max_steps=args.steps, checkpoint_every=0)
    qat = dataclasses.replace(train.bitnet, enabled=True, warmup_steps=args.warmup)
    warmup_cfg = dataclasses.replace(fp_cfg, bitnet=qat)
    step0_cfg = dataclasses.replace(fp_cfg, bitnet=dataclasses.replace(qat, warmup_steps=0))

    input_dir = Path(args.input)
    if not (input_dir / "config.json").is_file():
        input_dir = build_ancestor(base, args.data, work / "ancestor-1x")

    arms: dict[str, dict] = {}

    def train_arm(name: str, cfg, source: Path, container: CompressConfig) -> Path:
        started = time.process_time()
        out, info = forge_train(source, args.data, cfg, work, name)
        size = stage1(out, container, args.data, work, name)
        arms[name] = {"test_mean": size["input_test_mean"], "bytes": size["bytes"],
                      "container_test_mean": size["test_mean"], **info}
        if cfg.bitnet.enabled:
            arms[name]["warmup_steps"] = cfg.bitnet.warmup_steps
            arms[name]["test_mean_int8_act"] = int8_activation_mean(out, args.data, cfg.bitnet)
        arms[name]["cpu_seconds"] = time.process_time() - started
        log(name, arms[name])
        return out

    fp_dir = train_arm("fp", fp_cfg, input_dir, FP16)
    started = time.process_time()
    ptq = stage1(fp_dir, TERNARY, args.data, work, "ptq")
    arms["ptq"] = {"test_mean": ptq["test_mean"], "bytes": ptq["bytes"], "steps": args.steps,
                   "cpu_seconds": time.process_time() - started}
    log("ptq", arms["ptq"])
    qat_dir = train_arm("qat_warmup", warmup_cfg, input_dir, TERNARY)
    train_arm("qat_step0", step0_cfg, input_dir, TERNARY)

    shipped = dataclasses.replace(load_section("compress", args.params), heal=HealConfig(steps=0),
                                  calibration_batches=0)
    for name, model_dir in (("fp", fp_dir), ("qat_warmup", qat_dir)):
        run = stage1(model_dir, shipped, args.data, work, f"shipped-{name}")
        arms[name]["shipped_stage1_noheal"] = {"test_mean": run["test_mean"], "bytes": run["bytes"]}
    packed = stage1(qat_dir, TERNARY_FP32, args.data, work, "retention")
    arms["qat_warmup"]["ternary_bit_exact"] = ternary_bit_exact(qat_dir)

    started = time.process_time()
    shape = base.model
    wide = dataclasses.replace(base, model=dataclasses.replace(
        shape, hidden_size=2 * shape.hidden_size, intermediate_size=2 * shape.intermediate_size),
        ancestor=dataclasses.replace(base.ancestor, steps=args.ancestor_steps))
    wide_dir = build_ancestor(wide, args.data, work / "ancestor-2x")
    ancestor_seconds = time.process_time() - started
    wide_fp = dataclasses.replace(fp_cfg, max_steps=args.steps_2x)
    wide_warmup = min(args.warmup, args.steps_2x // 4)
    wide_qat = dataclasses.replace(wide_fp, bitnet=dataclasses.replace(qat, warmup_steps=wide_warmup))
    train_arm("qat_2x_width", wide_qat, wide_dir, TERNARY)
    train_arm("fp_2x_width", wide_fp, wide_dir, FP16)
    for name in ("qat_2x_width", "fp_2x_width"):
        arms[name] |= {"hidden_size": wide.model.hidden_size, "ancestor_steps": args.ancestor_steps,
                       "ancestor_cpu_seconds": ancestor_seconds}
    return {"arms": {name: arms[name] for name in ARMS}, "stage1_retention": packed["retention"]}


def log(name: str, arm: dict) -> None:
    print(f"[bitnet bench] {name}: test_mean {arm['test_mean']:.4f}, {arm['bytes']:,} B, "
          f"{arm['cpu_seconds']:.0f} CPU s", file=sys.stderr, flush=True)


def table(result: dict) -> str:
    fp = result["arms"]["fp"]
    lines = ["arm           test_mean  vs fp   bytes     int8-act  steps",
             "------------  ---------  ------  --------  --------  -----"]
    for name, arm in result["arms"].items():
        act = f"{arm['test_mean_int8_act']:.4f}" if "test_mean_int8_act" in arm else "-"
        lines.append(f"{name:<12}  {arm['test_mean']:.4f}     {arm['test_mean'] / fp['test_mean']:.3f}x  "
                     f"{arm['bytes']:>8,}  {act:>8}  {arm['steps']}")
    lines.append(f"stage1_retention (qat_warmup through bitnet158 stage 1): {result['stage1_retention']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data")
    parser.add_argument("--input", default="models/evolved", help="the train stage's input model")
    parser.add_argument("--steps", type=int, default=400, help="Forge-loop steps of the 1x arms")
    parser.add_argument("--warmup", type=int, default=100, help="qat_warmup's lambda ramp in steps")
    parser.add_argument("--steps-2x", type=int, default=300, help="Forge-loop steps of the 2x-width arms")
    parser.add_argument("--ancestor-steps", type=int, default=400, help="pretraining steps of the 2x ancestor")
    parser.add_argument("--work", help="directory for models and containers (default: a temporary one)")
    parser.add_argument("--out", help="also write the JSON result here (e.g. metrics/bitnet.json)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.process_time()
    result = run_bench(args)
    print(f"[bitnet bench] total {time.process_time() - started:.0f} CPU s", file=sys.stderr)
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result) if args.json else table(result))
    return result


if __name__ == "__main__":
    main()
