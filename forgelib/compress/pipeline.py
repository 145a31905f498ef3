"""The two-stage compression pipeline: one entry point for the stage script and the CLI.

Stage 1 (BitNet + SeedLM by default) encodes the input model. An optional quantization-aware
heal precedes the first stage that ternarizes a group: stage 1 (Agent Forge's order, the
default), or stage 2 when only stage 2 has ternary groups (it then trains on stage 1's decoded
weights, with the groups stage 2 keeps frozen). Stage 2 (VPTQ + HyperFn by default) takes stage 1's
output as its input, as Agent Forge chains them (``stage2_source: stage1``, the default): it
re-encodes, group by group, stage 1's decoded weights, and a group set to ``keep`` carries its
stage-1 payload over unchanged. ``stage2_source: fp`` instead re-encodes the input model's own
full-precision weights (a second, independent compression, reported as ``final.input: "fp"``).
Each stage writes one container, loads it back (``load_compressed``: what is evaluated is what
is on disk, and what ``forge compression decompress`` writes) and reports real bytes (the
container file, header included), payload bits per linear weight, SNR against the input model,
times and, given an ``evaluate`` callable, accuracy and retention.

Output layout: ``out_dir/stage1/model.forge.safetensors``, ``out_dir/final/model.forge.safetensors``
(a copy of stage 1 when ``stages=1``) and ``out_dir/stats.json`` (the returned dict).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from transformers import PreTrainedModel

from forgelib.compress.codecs.registry import decode_entry, get_codec
from forgelib.compress.config import KEEP, CompressConfig, StageConfig
from forgelib.compress.container import CONTAINER_NAME, Container, serialized_size, write_container
from forgelib.compress.encode import Encoded, encode_tensor, summarize
from forgelib.compress.groups import GROUPS, group_of
from forgelib.compress.heal import heal
from forgelib.compress.hessian import collect_hessians
from forgelib.compress.loader import build_empty_model, load_compressed, load_into, model_dir_side_files
from forgelib.compress.target import Source, encode_sources, search_target
from forgelib.configtools import to_dict
from forgelib.errors import ForgeError
from forgelib.io import atomic_dir, write_json
from forgelib.models.hf import load_weights

log = logging.getLogger(__name__)
LINEAR_GROUPS = ("attention", "mlp")  # the decoder blocks' projection matrices
TERNARY = "bitnet158"  # the codec a heal trains for
Evaluate = Callable[[PreTrainedModel], Mapping[str, Any]]
Batches = Iterable[Mapping[str, torch.Tensor]]


def compress_model(
    model_dir: str | os.PathLike, out_dir: str | os.PathLike, config: CompressConfig = CompressConfig(), *,
    stages: int = 2, target_size: float | None = None, evaluate: Evaluate | None = None,
    heal_batches: Batches | None = None, calibration_batches: Batches | None = None,
    search_evaluate: Evaluate | None = None,
) -> dict[str, Any]:
    """Compress the HF model in ``model_dir`` into ``out_dir`` (atomic); returns the stats dict.

    ``target_size``: the final container's size as a fraction of the fp32 weights (e.g. 0.018);
    the final stage then picks each group's rung from its ladder. ``evaluate(model)`` returns at
    least ``{"mean": float, "perplexity": float}``. ``heal_batches`` / ``calibration_batches``
    yield dicts of ``input_ids``, ``attention_mask`` (and ``labels`` for healing).
    ``search_evaluate(model)`` (same return shape, on validation data: the search must not see the
    test split) scores ``--target-size`` candidates by log-perplexity; without it the search uses
    a weight-distortion proxy.
    """
    if stages not in (1, 2):
        raise ForgeError(f"--stages: expected 1 or 2, got {stages!r}")
    if target_size is not None and not 0 < target_size <= 1:
        raise ForgeError(f"--target-size: expected a fraction of the fp32 size in (0, 1], got {target_size!r}")
    if config.heal.steps and heal_batches is None:
        raise ForgeError("compress.heal.steps > 0 needs training batches (heal_batches); or set heal.steps: 0")
    model_config, files = model_dir_side_files(model_dir)
    model = _load_fp32(model_dir)
    params = {name: p for name, p in model.named_parameters()}  # tied weights appear once
    groups = {name: group_of(name, p.dim()) for name, p in params.items()}
    n_params = sum(p.numel() for p in params.values())
    target_bytes = None if target_size is None else int(target_size * 4 * n_params)
    input_eval = _evaluate(evaluate, model)
    result: dict[str, Any] = {
        "n_params": n_params, "fp32_bytes": 4 * n_params, "stages": stages, "target_size": target_size,
        "input_test_mean": input_eval["mean"] if input_eval else None, "input_eval": input_eval,
        "config": to_dict(config),  # every codec setting, defaults included
    }
    base = result["input_test_mean"]

    score = _perplexity_score(search_evaluate, model_config)

    with atomic_dir(out_dir) as tmp:
        def container_of(stage: str) -> Callable[[dict[str, Encoded]], Container]:
            def build(encoded: dict[str, Encoded]) -> Container:
                info = {"stage": stage, "source_model": Path(model_dir).name,
                        "groups": {g: s["codec"] for g, s in summarize(encoded)["groups"].items()}}
                return Container({n: e.entry for n, e in encoded.items()}, model_config, files, info)
            return build

        heal_at = _heal_stage(config, stages)
        # Every SNR's reference: the input's weights. Only a heal moves them, so only then copy.
        unhealed = {name: p.detach().clone() if heal_at else p.detach() for name, p in params.items()}
        heal1 = None
        if heal_at == "stage1":
            # Healing adapts the latent weights to their ternary projection; used as plain fp
            # weights they are much worse than the originals (measured on the embedded default:
            # retention 0.013), so only their encoding ships, and `fp` stage 2 restores the input's.
            heal1 = _heal(model, model_config, groups, config.stage1, config, heal_batches, evaluate, base,
                          lambda: encode_sources(_sources(params, groups, unhealed), config.stage1.spec))

        sources1 = _sources(params, groups, unhealed)
        stage1, enc1, model1 = _run_stage(
            "stage1", sources1, config.stage1, tmp, container_of("stage1"),
            target_bytes if stages == 1 else None, evaluate, base, n_params, score)
        if heal1 is not None:
            stage1["heal"] = heal1 | {"test_mean_after": stage1.get("test_mean"),
                                      "retention_after": stage1.get("retention")}
        result["stage1"] = stage1

        if stages == 1:
            (tmp / "final").mkdir()
            shutil.copyfile(tmp / "stage1" / CONTAINER_NAME, tmp / "final" / CONTAINER_NAME)
            result["final"] = stage1 | {"path": f"final/{CONTAINER_NAME}"}
        else:
            if config.stage2_source == "fp" and heal1 is not None:
                with torch.no_grad():
                    for name, p in params.items():
                        p.copy_(unhealed[name])
            source_model = model if config.stage2_source == "fp" else model1
            source_params = dict(source_model.named_parameters())

            def sources2(hessians: dict[str, torch.Tensor]) -> list[Source]:
                # The error a stage-2 codec adds is measured against the input model's weights, so
                # the final SNR includes stage 1's error when stage 2 starts from stage 1's output.
                return [Source(n, groups[n], source_params[n].detach(), unhealed[n], hessians.get(n), enc1[n])
                        for n in params]

            heal2 = None
            if heal_at == "stage2":
                heal2 = _heal(source_model, model_config, groups, config.stage2, config, heal_batches, evaluate, base,
                              lambda: encode_sources(sources2(_hessians(source_model, groups, config,
                                                                        calibration_batches)),
                                                     config.stage2.spec))
            # Hessians of the model as stage 2 will ship it: a healed group at its ternary projection.
            hessians = _hessians(_projected(source_model, groups, config.stage2) if heal2 else source_model,
                                 groups, config, calibration_batches)
            result["final"], _, _ = _run_stage(
                "final", sources2(hessians), config.stage2, tmp, container_of("final"), target_bytes, evaluate,
                base, n_params, score)
            result["final"]["hessians"] = len(hessians)
            result["final"]["input"] = config.stage2_source
            if heal2 is not None:
                result["final"]["heal"] = heal2 | {"test_mean_after": result["final"].get("test_mean"),
                                                   "retention_after": result["final"].get("retention")}
        write_json(tmp / "stats.json", result)
    return result



def _heal_stage(config: CompressConfig, stages: int) -> str | None:
    """Which stage the heal precedes: the first that ternarizes a group (``bitnet158``).

    Stage 1 when it has a ternary group; else stage 2 (its re-encoded groups train on stage 1's
    decoded weights, its ``keep`` groups stay frozen). None without heal steps, or when only an
    unrun stage 2 ternarizes (``stages=1``)."""
    if not config.heal.steps:
        return None
    ternary = {name: any(stage.spec(g).codec == TERNARY for g in GROUPS)
               for name, stage in (("stage1", config.stage1), ("stage2", config.stage2))}
    if not any(ternary.values()):
        raise ForgeError("compress.heal.steps > 0 but no group of compress.stage1 or compress.stage2 uses "
                         f"codec {TERNARY}: nothing to heal; set compress.heal.steps: 0")
    if ternary["stage1"]:
        return "stage1"
    return "stage2" if stages == 2 else None


def _heal(model: PreTrainedModel, model_config: dict, groups: dict[str, str], stage: StageConfig,
          config: CompressConfig, batches: Batches, evaluate: Evaluate | None, base: float | None,
          encode_unhealed: Callable[[], dict[str, Encoded]]) -> dict[str, Any]:
    """Heal ``model`` in place before ``stage``: its ternary groups train through BitLinear, the
    groups it keeps (``keep``: the stage-1 payload ships) are frozen. Reports the stage's
    evaluation without the heal (``encode_unhealed``), to show what the heal bought."""
    before = _evaluate(evaluate, _decoded_model(model_config, encode_unhealed())) if evaluate else None
    ternary = {n for n, g in groups.items() if stage.spec(g).codec == TERNARY}
    frozen = [p for n, p in model.named_parameters() if stage.spec(groups[n]).codec == KEEP]
    log.info("healing %d steps (%d ternary tensors, %d frozen)", config.heal.steps, len(ternary), len(frozen))
    for p in frozen:
        p.requires_grad_(False)
    try:
        report = heal(model, batches, config.heal, lambda m: f"{m}.weight" in ternary, seed=config.seed)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return report | {"test_mean_before": before["mean"] if before else None, "retention_before": _retention(before, base),
                     "perplexity_before": before.get("perplexity") if before else None, "frozen_tensors": len(frozen)}


def _projected(model: PreTrainedModel, groups: dict[str, str], stage: StageConfig) -> PreTrainedModel:
    """A copy of ``model`` with ``stage``'s ternary groups at their decoded ternary weights."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            spec = stage.spec(groups[name])
            if spec.codec == TERNARY:
                p.copy_(decode_entry(encode_tensor(p.detach(), groups[name], spec).entry))
    return out


def _load_fp32(model_dir: str | os.PathLike) -> PreTrainedModel:
    return load_weights(model_dir, dtype=torch.float32)


def _sources(params: dict[str, torch.nn.Parameter], groups: dict[str, str],
             reference: dict[str, torch.Tensor]) -> list[Source]:
    return [Source(n, groups[n], p.detach(), reference[n]) for n, p in params.items()]


def _evaluate(evaluate: Evaluate | None, model: PreTrainedModel) -> dict | None:
    if evaluate is None:
        return None
    with torch.no_grad():
        return dict(evaluate(model))


def _retention(evaluation: dict | None, base: float | None) -> float | None:
    if evaluation is None or not base:
        return None
    return evaluation["mean"] / base


def _perplexity_score(search_evaluate: Evaluate | None, model_config: dict
                      ) -> Callable[[dict[str, Encoded]], float] | None:
    """Target-search score of a candidate encoding: log-perplexity of the decoded model."""
    if search_evaluate is None:
        return None

    def score(encoded: dict[str, Encoded]) -> float:
        return math.log(_evaluate(search_evaluate, _decoded_model(model_config, encoded))["perplexity"])

    return score


def size_figures(size: int, n_params: int, payload: int) -> dict[str, Any]:
    """A container's size figures: ``size`` is the whole file, header included; ``payload`` the codecs' bytes."""
    return {"bytes": size, "bits_per_param": 8 * size / n_params, "fraction_fp32": size / (4 * n_params),
            "fraction_bf16": size / (2 * n_params), "overhead_bytes": size - payload}


def _decoded_model(model_config: dict, encoded: dict[str, Encoded]) -> PreTrainedModel:
    model = build_empty_model(model_config)
    load_into(model, ((n, decode_entry(e.entry)) for n, e in encoded.items()))
    return model


def _hessians(model: PreTrainedModel, groups: dict[str, str], config: CompressConfig,
              batches: Batches | None) -> dict[str, torch.Tensor]:
    uses_hessian = {g for g in GROUPS if any(
        r.codec != "keep" and get_codec(r.codec).needs_hessian
        for r in (config.stage2.spec(g), *config.stage2.rungs(g)))}
    names = {n for n, g in groups.items() if g in uses_hessian}
    if not names or batches is None or config.calibration_batches == 0:
        return {}
    return collect_hessians(model, batches, names, max_batches=config.calibration_batches)


def _run_stage(stage: str, sources: list[Source], stage_config: StageConfig, tmp: Path,
               build: Callable[[dict[str, Encoded]], Container], target_bytes: int | None,
               evaluate: Evaluate | None, base: float | None, n_params: int,
               score: Callable[[dict[str, Encoded]], float] | None,
               ) -> tuple[dict[str, Any], dict[str, Encoded], PreTrainedModel]:
    log.info("%s: encoding %d tensors", stage, len(sources))
    target_report = None
    if target_bytes is None:
        encoded = encode_sources(sources, stage_config.spec)
    else:
        encoded, target_report = search_target(sources, stage_config, target_bytes,
                                               lambda enc: serialized_size(build(enc)), score)
        target_report["score"] = "log_perplexity" if score else "weight_distortion"
    path = tmp / stage / CONTAINER_NAME
    size = write_container(path, build(encoded))
    start = time.perf_counter()
    decoded = load_compressed(path)
    decode_seconds = time.perf_counter() - start
    evaluation = _evaluate(evaluate, decoded)
    summary = summarize(encoded)
    payload = sum(e.payload_bytes for e in encoded.values())
    linear = [summary["groups"][g] for g in LINEAR_GROUPS if g in summary["groups"]]
    linear_bits = 8 * sum(g["payload_bytes"] for g in linear) / max(1, sum(g["n_params"] for g in linear))
    stats: dict[str, Any] = {
        "path": f"{stage}/{CONTAINER_NAME}", "n_params": n_params, **size_figures(size, n_params, payload),
        "payload_bytes": payload,
        "payload_bits_per_linear_weight": linear_bits,
        "snr_db": summary["snr_db"], "groups": summary["groups"], "codecs": summary["codecs"],
        "encode_seconds": sum(e.seconds for e in encoded.values()), "decode_seconds": decode_seconds,
        "test_mean": evaluation["mean"] if evaluation else None,
        "perplexity": evaluation.get("perplexity") if evaluation else None,
        "retention": _retention(evaluation, base), "eval": evaluation,
    }
    if target_report is not None:
        stats["target"] = target_report
    return stats, encoded, decoded
