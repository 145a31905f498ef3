"""The `compress` stage's entry point: compress the trained model in two stages and measure it.

Accuracy is the real exact match on the test split of the model loaded back from each
container; the ``--target-size`` search scores candidates on the validation split only, so the
test split never steers a choice. Healing and VPTQ calibration draw batches from the train
split.

A specialized input (SVF experts beside its weights) keeps its experts: the containers carry
them (fp16 z vectors), and ``adapted`` reports the test mean with dispatch of the input and of
each container, whose decoded weights get their own SVD at load (``adapted_retention``).
"""

from __future__ import annotations

from pathlib import Path

from forgelib.compress.config import CompressConfig
from forgelib.compress.pipeline import compress_model
from forgelib.data.batching import encode_rows, infinite_batches
from forgelib.data.tasks import load_tasks
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

    def calibration():
        stream = batches(seed=cfg.seed + 1)
        return [next(stream) for _ in range(cfg.calibration_batches)]

    stats = compress_model(
        input_dir, out_dir, cfg, stages=stages, target_size=target_size,
        evaluate=lambda model: evaluate_model(model, tokenizer, tasks, split="test", limit=eval_limit),
        search_evaluate=lambda model: evaluate_model(model, tokenizer, tasks, split="validation", limit=eval_limit),
        heal_batches=batches(seed=cfg.seed) if cfg.heal.steps else None,
        calibration_batches=calibration() if cfg.calibration_batches else None,
    )
    adapted = adapted_scores(input_dir, out_dir, tasks, eval_limit)
    if adapted is not None:
        stats["adapted"] = adapted
    if metrics_path:
        write_json(metrics_path, stats)
    return stats


def adapted_scores(input_dir: str | Path, out_dir: str | Path, tasks, eval_limit: int | None) -> dict | None:
    """Test mean with per-prompt SVF adaptation of the input and of each container (None when the
    input has no experts), and the retention of that figure."""
    from forgelib.compress.loader import load_model_any, side_files_any
    from forgelib.specialize.model import SIDE_JSON, SpecializedModel, is_specialized

    if not is_specialized(input_dir):
        return None
    source = SpecializedModel.load(input_dir).evaluate(tasks, split="test", limit=eval_limit)["mean"]
    out = {"input_test_mean_adapted": source}
    for name in ("stage1", "final"):
        path = Path(out_dir) / name
        if not path.exists():
            continue
        files = side_files_any(path)
        if SIDE_JSON not in files:
            continue
        model, tokenizer = load_model_any(path)
        score = SpecializedModel.from_parts(model, tokenizer, files, where=str(path)).evaluate(
            tasks, split="test", limit=eval_limit)["mean"]
        out[name] = {"test_mean_adapted": score, "adapted_retention": score / source if source else None}
    return out
