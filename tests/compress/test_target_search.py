"""The --target-size search: real sizes, the target met, and no slack left unused."""

import torch

from forgelib.compress.config import CodecSpec, Stage2Config
from forgelib.compress.container import Container, serialized_size
from forgelib.compress.target import Source, encode_sources, search_target

LADDER = (CodecSpec.of("fp32"), CodecSpec.of("fp16"), CodecSpec.of("int8"), CodecSpec.of("bitnet158"))


def sources():
    g = torch.Generator().manual_seed(0)
    out = []
    for name, group, shape in [("model.layers.0.self_attn.q_proj.weight", "attention", (32, 32)),
                               ("model.layers.0.mlp.up_proj.weight", "mlp", (64, 32)),
                               ("model.norm.weight", "norms", (32,))]:
        w = torch.randn(*shape, generator=g)
        out.append(Source(name, group, w, w))
    return out


def size_of(encoded):
    return serialized_size(Container({n: e.entry for n, e in encoded.items()}, {"model_type": "llama"}))


def size_for(attention, mlp):
    return size_of(encode_sources(sources(), Stage2Config(attention=attention, mlp=mlp).spec))


def test_search_meets_the_target_and_spends_the_slack():
    stage = Stage2Config(ladder={"attention": LADDER, "mlp": LADDER})
    top = size_for(LADDER[0], LADDER[0])
    target = top // 2
    encoded, report = search_target(sources(), stage, target, size_of)
    assert report["path"][0]["bytes"] == top
    assert report["met"] and report["bytes"] == size_of(encoded) <= target
    choice = report["choice"]
    level = {g: [rung.to_params() for rung in LADDER].index(choice[g]) for g in ("attention", "mlp")}
    for better in range(level["attention"]):  # neither group can move up and still fit
        assert size_for(LADDER[better], LADDER[level["mlp"]]) > target
    for better in range(level["mlp"]):
        assert size_for(LADDER[level["attention"]], LADDER[better]) > target


def test_unreachable_target_ends_on_the_smallest_rungs():
    stage = Stage2Config(ladder={"attention": LADDER, "mlp": LADDER})
    _, report = search_target(sources(), stage, 10, size_of)
    assert not report["met"]
    assert report["choice"]["attention"]["codec"] == report["choice"]["mlp"]["codec"] == "bitnet158"
