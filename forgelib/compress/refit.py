"""Refitting a specialized model's SVF experts on a container's decoded weights, and deciding on
validation whether they ship.

Transformer² (Sun et al. 2025, arXiv 2501.06252) trains each expert vector once, on the base
model's SVD ``W = U diag(s) Vh``: z rescales the singular values along those singular vectors.
A codec replaces ``W`` by its reconstruction, whose own SVD has other singular vectors, and a
:class:`~forgelib.specialize.model.SpecializedModel` applies the carried z to that new SVD. On
the embedded default the carried experts then lost to the plain decoded weights (test mean
0.560 vs 0.626 on stage 1, 0.556 vs 0.595 on the final container; the input's adapted model
scored 0.702 against its plain 0.672), and they cost 9.2 KB of the 56 KB final container.

**Deviation from the paper**, for that reason: each container's experts are refit on its own
decoded weights. :func:`refit_side_files` recomputes the SVD of the decoded weights and trains
every family's expert and the dispatcher again, starting from the carried z vectors, with the
specialize stage's method: teacher-forced cross-entropy through ``W'`` (the answer tokens for a
family expert, the family's label token for the dispatcher), the same loop
(:func:`forgelib.specialize.experts.optimize`: AdamW, warmup + cosine, gradient clipping) and the
same rows (the train split of the family's tasks; the dispatcher's balanced label rows), through
``train_expert``; only the starting point differs (its ``init``: the carried z, not z = 0).

:func:`refit_container` then scores the plain decoded model, the adapted model with the carried
experts and the adapted model with the refit ones on the **validation** split. The refit experts
ship only if their adapted model beats the plain one there; otherwise the container is rewritten
without the two specialize side files, so it is smaller and runs as a plain model. Either way
the weight entries are rewritten unchanged (same codecs, payloads and decoded weights). The test
split is scored afterwards, for the report only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from forgelib.compress.container import Container, read_container, write_container
from forgelib.compress.config import RefitConfig
from forgelib.compress.loader import container_path, load_model_any
from forgelib.compress.pipeline import size_figures
from forgelib.data.tasks import get_task
from forgelib.errors import ForgeError
from forgelib.eval.evaluate import evaluate_model, score_rows
from forgelib.specialize.dispatch import dispatch_rows, encode_label_rows
from forgelib.specialize.experts import train_expert
from forgelib.specialize.model import SIDE_FILES, SpecializedModel, encode_side_files
from forgelib.specialize.svf import Expert, Factors, svf_applied

METHOD = "ce"
"""The refit loss: specialize's default method (``specialize.svf.method``, chosen there on
validation). Experts trained with ``reinforce`` are refit with it too (no sampling: the refit
stays within seconds); ``specialize.json`` records ``refit.method``."""


def refit_z(model, tokenizer, svd: Mapping[str, Factors], init: Expert, rows: Sequence[dict], *, steps: int,
            lr: float, batch_size: int, max_mult: float, grad_clip: float, warmup_steps: int, seed: int,
            encoded: Sequence | None = None, desc: str = "svf refit") -> tuple[Expert, list[float]]:
    """:func:`~forgelib.specialize.experts.train_expert` with :data:`METHOD`, started at ``init``
    rather than z = 0; returns the expert and every step's loss."""
    return train_expert(model, tokenizer, svd, rows, method=METHOD, steps=steps, lr=lr, batch_size=batch_size,
                        max_mult=max_mult, grad_clip=grad_clip, warmup_steps=warmup_steps, seed=seed,
                        encoded=encoded, init=init, desc=desc)


def answer_nll(model, tokenizer, svd: Mapping[str, Factors], expert: Expert, max_mult: float,
               rows: Sequence[dict], *, batch_size: int = 256) -> float:
    """Mean answer-token NLL (nats) of ``rows`` with ``expert`` applied: the loss ``refit_z`` lowers."""
    with svf_applied(model, svd, expert, max_mult):
        return float(score_rows(model, tokenizer, rows, batch_size=batch_size).loss)


def family_train_rows(tasks: Mapping, family: str) -> list[dict]:
    """The train rows of ``family``'s tasks: what the specialize stage trained its expert on."""
    return [row for name in tasks if get_task(name).family == family for row in tasks[name]["train"]]


def refit_side_files(model, tokenizer, tasks: Mapping, side_files: Mapping[str, bytes], cfg: RefitConfig, *,
                     seed: int, where: str = "side files",
                     svd: Mapping[str, Factors] | None = None) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The side files with every expert and the dispatcher refit on ``model``'s own SVD (``svd``
    when the caller has it; started from the z vectors in ``side_files``), and a report: each
    run's first batch loss (the carried z) and last, and the seconds it took (:func:`answer_nll`
    measures a family's whole train split, at the cost of a few seconds per family on the
    embedded default, so the stage leaves it out)."""
    started = time.perf_counter()
    carried = SpecializedModel.from_parts(model, tokenizer, side_files, where=where, svd=svd)  # checks, decodes
    svd, max_mult = carried.svd, carried.max_mult
    common = dict(batch_size=cfg.batch_size, max_mult=max_mult, grad_clip=cfg.grad_clip, seed=seed)
    experts, report = {}, {"method": METHOD, "families": {}}
    for family in carried.families:
        rows = family_train_rows(tasks, family)
        if not rows:
            raise ForgeError(f"{where}: the expert of family {family!r} has no train rows in the data "
                             f"(tasks: {', '.join(tasks)}); compress the model with the data it was specialized on")
        experts[family], losses = refit_z(model, tokenizer, svd, carried.experts[family], rows, steps=cfg.steps,
                                          lr=cfg.lr, warmup_steps=cfg.warmup_steps, desc=f"refit {family}", **common)
        report["families"][family] = {"first_loss": losses[0], "last_loss": losses[-1]}
    labels = carried.meta["labels"]
    rows = dispatch_rows(tasks, labels, split="train", per_family=cfg.dispatch_rows_per_family, seed=seed)
    dispatcher, losses = refit_z(model, tokenizer, svd, carried.dispatcher, rows, steps=cfg.dispatch_steps,
                                 lr=cfg.dispatch_lr, warmup_steps=min(cfg.warmup_steps, cfg.dispatch_steps),
                                 encoded=encode_label_rows(tokenizer, rows), desc="refit dispatch", **common)
    report["dispatcher"] = {"first_loss": losses[0], "last_loss": losses[-1]}
    meta = {k: v for k, v in carried.meta.items() if k not in ("format", "sizes")}  # encode_side_files sets them
    meta["refit"] = {"method": METHOD, "steps": cfg.steps, "dispatch_steps": cfg.dispatch_steps, "seed": seed}
    report["seconds"] = time.perf_counter() - started
    return encode_side_files(meta, experts, dispatcher), report


def replace_side_files(path: str | Path, files: Mapping[str, bytes], info: Mapping[str, Any] | None = None) -> int:
    """Rewrite the container at ``path`` (atomically) with exactly ``files`` as its side files and
    ``info`` merged into its provenance; the weight entries are written back as read. Returns the
    new file's size in bytes."""
    found = container_path(path)
    if found is None:
        raise ForgeError(f"{path}: no compressed container to rewrite")
    old = read_container(found)
    return write_container(found, Container(old.entries, old.model_config, dict(files), {**old.info, **(info or {})}))


def without_experts(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """``files`` less the specialize stage's two side files."""
    return {name: data for name, data in files.items() if name not in SIDE_FILES}


def resized(stage_stats: Mapping[str, Any], size: int) -> dict[str, Any]:
    """The size figures of a stage's stats for a container of ``size`` bytes (the payload does not change)."""
    return size_figures(size, stage_stats["n_params"], stage_stats["payload_bytes"])


def refit_container(path: str | Path, tasks: Mapping, cfg: RefitConfig, *, seed: int,
                    eval_limit: int | None = None) -> dict[str, Any]:
    """Refit the experts the container at ``path`` carries, decide on validation, rewrite it.

    Returns ``experts`` ("refit" or "dropped"), the three validation means (``validation_plain``,
    ``validation_adapted_carried``, ``validation_adapted_refit``) and dispatch accuracies, the
    refit report, ``refit_seconds``, ``bytes_before``/``bytes`` (the file before and after the
    rewrite) and, when the experts ship, ``test_mean_adapted``. The decoded weights' SVD is
    computed once and shared by the carried and the refit experts."""
    found = container_path(path)
    if found is None:
        raise ForgeError(f"{path}: no compressed container")
    where = str(found)
    files, bytes_before = dict(read_container(found).files), found.stat().st_size
    model, tokenizer = load_model_any(found)
    carried_model = SpecializedModel.from_parts(model, tokenizer, files, where=where)  # the decoded weights' SVD, once
    refit_files, refit_report = refit_side_files(model, tokenizer, tasks, files, cfg, seed=seed, where=where,
                                                 svd=carried_model.svd)
    refit_model = SpecializedModel.from_parts(model, tokenizer, refit_files, where=where, svd=carried_model.svd)

    plain = evaluate_model(model, tokenizer, tasks, split="validation", limit=eval_limit)
    carried, refit = (m.evaluate(tasks, split="validation", limit=eval_limit) for m in (carried_model, refit_model))
    ship = refit["mean"] > plain["mean"]
    decision = "refit" if ship else "dropped"
    size = replace_side_files(found, {**without_experts(files), **(refit_files if ship else {})},
                              info={"svf_experts": decision})
    report = {
        "experts": decision, "validation_plain": plain["mean"], "validation_adapted_carried": carried["mean"],
        "validation_adapted_refit": refit["mean"],
        "validation_dispatch_accuracy_carried": carried["dispatch_accuracy"],
        "validation_dispatch_accuracy_refit": refit["dispatch_accuracy"],
        "refit_seconds": refit_report["seconds"], "refit": refit_report, "bytes_before": bytes_before, "bytes": size,
    }
    if ship:  # the rewrite keeps every weight entry as read, so the shipped container is this model
        report["test_mean_adapted"] = refit_model.evaluate(tasks, split="test", limit=eval_limit)["mean"]
    return report
