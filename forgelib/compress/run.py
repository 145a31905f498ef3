"""The `compress` stage's entry point: compress the trained model in two stages and measure it.

Accuracy is the real exact match on the test split of the model loaded back from each
container; the ``--target-size`` search scores candidates on the validation split only, so the
test split never steers a choice. Healing draws batches from the train split, and so does the
VPTQ/GPTQ calibration unless ``compress.calibration: code`` (Python standard-library source,
disjoint from code perplexity's files: the SmolLM2 profile, whose capability to keep is coding).

A specialized input (SVF experts and a dispatcher beside its weights) hands its experts to the
containers, which carry them as side files. With ``compress.refit.enabled`` (the default), once
the containers are written, each one's experts are **refit on its decoded weights**
(:mod:`forgelib.compress.refit`): the SVD of the decoded weights, then every family's expert and
the dispatcher trained again from the carried z vectors, as the specialize stage trains them, on
train rows. The adapted model (refit experts) and the plain decoded model are then scored on the
validation split: the refit experts ship if the adapted model beats the plain one there, and the
container is otherwise rewritten without the experts (smaller, and served plain). This deviates
from Transformer², which trains its experts once on the base weights: compression changes the
singular vectors the z vectors rescale, and the carried experts lost to the plain decoded model
on the embedded default. ``stats[stage]``'s sizes are those of the rewritten file.

``adapted`` reports the input's adapted test mean and, per container, the decision, the
validation figures (plain, carried experts, refit experts), the refit's seconds, the test mean
of the adapted container when the experts ship (``test_mean_adapted``), and
``adapted_retention``: the test mean of what the container serves (adapted when the experts
ship, plain otherwise) over the input's adapted test mean. With the refit off the experts are
carried unchanged and scored on test, as before.
"""

from __future__ import annotations

from pathlib import Path

from forgelib.compress.config import CompressConfig
from forgelib.compress.pipeline import compress_model
from forgelib.data.batching import encode_rows, infinite_batches
from forgelib.data.tasks import load_tasks
from forgelib.eval.codeppl import calibration_batches
from forgelib.eval.evaluate import evaluate_model
from forgelib.io import write_json
from forgelib.models.compat import check_tokenizer_matches
from forgelib.models.hf import load_tokenizer


def run_compress(cfg: CompressConfig, *, data_dir: str | Path, input_dir: str | Path, out_dir: str | Path,
                 stages: int = 2, target_size: float | None = None, metrics_path: str | Path | None = None,
                 eval_limit: int | None = None) -> dict:
    check_tokenizer_matches(input_dir)  # intact files and a tokenizer that fits, before any work
    tasks = load_tasks(data_dir)
    tokenizer = load_tokenizer(input_dir)
    train_rows = encode_rows(tokenizer, [row for splits in tasks.values() for row in splits["train"]])

    def batches(seed: int):
        return infinite_batches(train_rows, batch_size=cfg.batch_size, pad_id=tokenizer.pad_token_id, seed=seed)

    stats = compress_model(
        input_dir, out_dir, cfg, stages=stages, target_size=target_size,
        evaluate=lambda model: evaluate_model(model, tokenizer, tasks, split="test", limit=eval_limit),
        search_evaluate=lambda model: evaluate_model(model, tokenizer, tasks, split="validation", limit=eval_limit),
        heal_batches=batches(seed=cfg.seed) if cfg.heal.steps else None,
        calibration_batches=hessian_batches(cfg, tokenizer, train_rows) if cfg.calibration_batches else None,
    )
    adapted = adapted_scores(cfg, input_dir, out_dir, tasks, stats, eval_limit)
    if adapted is not None:
        stats["adapted"] = adapted
        write_json(Path(out_dir) / "stats.json", stats)  # the containers' sizes may have changed
    if metrics_path:
        write_json(metrics_path, stats)
    return stats


def hessian_batches(cfg: CompressConfig, tokenizer, train_rows: list) -> list[dict]:
    """The ``compress.calibration_batches`` batches the VPTQ/GPTQ Hessians are collected on:
    stdlib code windows (``calibration: code``) or train rows (``tasks``, encoded by the caller),
    drawn with seed ``compress.seed + 1`` (the heal's batches use ``compress.seed``)."""
    if cfg.calibration == "code":
        return calibration_batches(tokenizer, count=cfg.calibration_batches * cfg.batch_size,
                                   seq_len=cfg.calibration_seq_len, batch_size=cfg.batch_size, seed=cfg.seed)
    stream = infinite_batches(train_rows, batch_size=cfg.batch_size, pad_id=tokenizer.pad_token_id, seed=cfg.seed + 1)
    return [next(stream) for _ in range(cfg.calibration_batches)]


def adapted_scores(cfg: CompressConfig, input_dir: str | Path, out_dir: str | Path, tasks, stats: dict,
                   eval_limit: int | None) -> dict | None:
    """The ``adapted`` block (None when the input has no experts). With the refit on, each
    container is refit, decided on validation and rewritten, and ``stats[stage]``'s size
    figures are updated to the rewritten file."""
    from forgelib.compress.container import CONTAINER_NAME, read_container
    from forgelib.compress.loader import load_model_any, side_files_any
    from forgelib.compress.refit import refit_container, replace_side_files, resized
    from forgelib.specialize.model import SIDE_JSON, SpecializedModel, is_specialized

    if not is_specialized(input_dir):
        return None
    source = SpecializedModel.load(input_dir).evaluate(tasks, split="test", limit=eval_limit)["mean"]
    out = {"input_test_mean_adapted": source}
    for name in ("stage1", "final"):
        path = Path(out_dir) / name
        if name not in stats or SIDE_JSON not in side_files_any(path):
            continue
        if cfg.refit.enabled and name == "final" and stats["stages"] == 1:
            # final is a copy of stage 1: the same decision, the same side files
            stage1 = read_container(Path(out_dir) / "stage1" / CONTAINER_NAME)
            size = replace_side_files(path, stage1.files, info={"svf_experts": out["stage1"]["experts"]})
            stats[name].update(resized(stats[name], size))
            report = dict(out["stage1"])
        elif cfg.refit.enabled:
            report = refit_container(path, tasks, cfg.refit, seed=cfg.seed, eval_limit=eval_limit)
            stats[name].update(resized(stats[name], report["bytes"]))
        else:
            carried = SpecializedModel.from_parts(*load_model_any(path), side_files_any(path), where=str(path))
            report = {"experts": "carried",
                      "test_mean_adapted": carried.evaluate(tasks, split="test", limit=eval_limit)["mean"]}
        served = report.get("test_mean_adapted", stats[name]["test_mean"])
        report["adapted_retention"] = served / source if source and served is not None else None
        out[name] = report
    return out
