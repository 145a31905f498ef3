"""The `quietstar` stage's entry point, and the measurement bench/quietstar.py prints.

:func:`measure_arms` trains and evaluates the four arms over ``cfg.seeds`` seeds and returns the
issue 12 contract::

    {"arms": {"sft": {"test_mean": [per seed], "mean": m, "std": s}, "pause": {...},
              "thoughts": {...}, "random_thoughts": {...}},
     "task": NAME, "enabled_by_default": bool}

plus extras: each arm's validation means and CPU seconds, the input model's score on the task,
the thoughts arm's plain-weights score (no thoughts, no mixing head), its headline-suite
``test_mean`` (plain weights, greedy) and ``test_mean_thinking`` (the thinking model) per seed,
and a few thoughts of the seed-0 model. ``std`` is the sample standard deviation over seeds.

``enabled_by_default`` is the issue's bar: ``thoughts`` beats both ``sft`` and ``pause`` by more
than the larger of their spreads, and ``random_thoughts`` falls below ``thoughts`` by more than
that spread.

:func:`run_quietstar` is the stage. It always measures the arms (so every ``dvc repro`` reports
whether thoughts pay), writes the seed-0 thinking model to ``thinking_dir`` and the metrics and
loss curves. What continues to ``train`` is ``out_dir``: the thinking model's weights with
``quietstar.enabled`` (train fine-tunes them as a plain model; the mixing head stays with
``thinking_dir``), else an unchanged copy of the input.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

from forgelib.configtools import to_dict
from forgelib.data.tasks import load_tasks
from forgelib.eval.evaluate import evaluate_model
from forgelib.io import atomic_dir, write_json, write_text_atomic
from forgelib.models.card import read_card
from forgelib.models.hf import load_model, require_model_dir
from forgelib.quietstar import arms
from forgelib.quietstar.config import QuietStarConfig
from forgelib.runtime import worker_pool

ARMS = ("sft", "pause", "thoughts", "random_thoughts")
EXAMPLES = 5


def summarise(values: list[float]) -> dict:
    """``{"test_mean": values, "mean": mean, "std": sample std}`` of one arm over its seeds."""
    return {"test_mean": values, "mean": statistics.fmean(values), "std": statistics.stdev(values)}


def decide(results: dict) -> dict:
    """The issue's bar for switching the stage on, with the numbers it compared."""
    thoughts, random_thoughts = results["thoughts"]["mean"], results["random_thoughts"]["mean"]
    controls = max(results["sft"]["mean"], results["pause"]["mean"])
    spread = max(results["sft"]["std"], results["pause"]["std"])
    gain, fallback = thoughts - controls, thoughts - random_thoughts
    return {"gain_over_best_control": gain, "spread": spread, "random_fallback": fallback,
            "enabled_by_default": gain > spread and fallback > spread}


def measure_arms(cfg: QuietStarConfig, *, data_dir: str | Path, input_dir: str | Path,
                 model_out: str | Path | None = None) -> tuple[dict, dict]:
    """(metrics, curves): the contract plus extras, and each arm's logged losses per seed.

    ``model_out``: where the seed-0 thinking model is saved (nowhere if None)."""
    input_dir = require_model_dir(input_dir, "quietstar input model")
    suite = arms.serial_suite(cfg)
    headline = load_tasks(data_dir)
    train_rows = arms.training_rows(cfg, suite, headline)
    input_lm, input_tok = load_model(input_dir)
    arms.check_fits(input_lm, {**suite, **headline}, cfg, input_dir)
    input_serial = evaluate_model(input_lm, input_tok, suite, split="test", batch_size=cfg.eval_batch_size)["mean"]
    input_headline = evaluate_model(input_lm, input_tok, headline, split="test", batch_size=cfg.eval_batch_size)["mean"]
    del input_lm

    scores = {arm: {"test": [], "validation": []} for arm in ARMS}
    seconds = {arm: [] for arm in ARMS}
    extra = {"test_mean_plain": [], "mix_weight": [], "headline_test_mean": [], "headline_test_mean_thinking": []}
    curves: dict[str, list[dict]] = {arm: [] for arm in ARMS if arm != "random_thoughts"}
    examples: list[dict] = []
    # every (seed, arm) trains from the input model with its own seed: independent jobs, spread
    # over forgelib.runtime.worker_pool (the thoughts arms, the longest, are submitted first)
    jobs = [(seed, arm) for arm in ("thoughts", "sft", "pause") for seed in range(cfg.seeds)]
    with worker_pool(len(jobs)) as pool:
        futures = {job: pool.submit(_arm_job, job[1], cfg, str(input_dir), suite, headline, train_rows, job[0],
                                    None if model_out is None else str(model_out)) for job in jobs}
        done = {job: future.result() for job, future in futures.items()}
    for seed in range(cfg.seeds):
        for arm in ("sft", "pause", "thoughts"):
            result = done[(seed, arm)]
            for name, (split_scores, cpu) in result["scores"].items():
                for split in ("test", "validation"):
                    scores[name][split].append(split_scores[split])
                seconds[name].append(cpu)
            curves[arm] += [{"seed": seed, **row} for row in result["history"]]
            for key, value in result.get("extra", {}).items():
                extra[key].append(value)
            examples = result.get("examples", examples)

    results = {arm: {**summarise(scores[arm]["test"]), "validation_mean": scores[arm]["validation"],
                     "cpu_seconds": seconds[arm]} for arm in ARMS}
    results["pause"]["pause_tokens"] = cfg.pause_tokens()
    results["thoughts"].update(test_mean_plain=extra["test_mean_plain"], final_mix_weight=extra["mix_weight"],
                               headline={"input_test_mean": input_headline, "test_mean": extra["headline_test_mean"],
                                         "test_mean_thinking": extra["headline_test_mean_thinking"]})
    decision = decide(results)
    metrics = {"arms": results, "task": cfg.task, "level": cfg.level, "train_rows": len(train_rows),
               "enabled_by_default": decision.pop("enabled_by_default"), "decision": decision,
               "input_test_mean": input_serial, "thought_examples": examples, "settings": to_dict(cfg)}
    return metrics, curves


def _arm_job(arm: str, cfg: QuietStarConfig, input_dir: str, suite, headline, train_rows, seed: int,
             model_out: str | None) -> dict:
    """One arm of one seed, trained from ``input_dir`` and scored: ``{"scores": {arm: ({split:
    mean}, cpu seconds)}, "history": [...]}``; the thoughts job also scores ``random_thoughts`` and
    the extras, and with seed 0 keeps a few thoughts and saves the thinking model to ``model_out``."""
    k = cfg.pause_tokens()
    started = time.process_time()

    def scored(evaluate, since: float) -> tuple[dict, float]:
        """Test and validation means, and the CPU seconds since ``since``."""
        means = {split: evaluate(split)["mean"] for split in ("test", "validation")}
        return means, time.process_time() - since

    if arm == "sft":
        lm, tok, history = arms.train_sft_arm(input_dir, train_rows, cfg, seed)
        return {"scores": {"sft": scored(lambda split: evaluate_model(lm, tok, suite, split=split,
                                                                        batch_size=cfg.eval_batch_size), started)},
                "history": history}
    if arm == "pause":
        lm, tok, pause_id, history = arms.train_pause_arm(input_dir, train_rows, cfg, seed)
        return {"scores": {"pause": scored(lambda split: arms.evaluate_pause(lm, tok, pause_id, k, suite, split=split,
                                                                               batch_size=cfg.eval_batch_size), started)},
                "history": history}
    model, history = arms.train_thoughts_arm(input_dir, train_rows, cfg, seed)
    out = {"scores": {"thoughts": scored(lambda split: arms.evaluate_thinking(model, suite, split=split,
                                                                               batch_size=cfg.eval_batch_size), started)},
           "history": history}
    out["scores"]["random_thoughts"] = scored(lambda split: arms.evaluate_thinking(
        model, suite, split=split, thoughts="random", seed=seed, batch_size=cfg.eval_batch_size), time.process_time())
    out["extra"] = {
        "test_mean_plain": evaluate_model(model.lm, model.tokenizer, suite, split="test",
                                          batch_size=cfg.eval_batch_size)["mean"],
        "mix_weight": history[-1]["mix_weight"],
        "headline_test_mean": evaluate_model(model.lm, model.tokenizer, headline, split="test",
                                             batch_size=cfg.eval_batch_size)["mean"],
        "headline_test_mean_thinking": model.evaluate(headline, split="test", batch_size=cfg.eval_batch_size)["mean"]}
    if seed == 0:
        rows = list(suite[cfg.task]["test"].select(range(EXAMPLES)))
        pairs = model.answers([r["prompt"] for r in rows], max_new_tokens=len(rows[0]["answer"]) + 3, return_thoughts=True)
        out["examples"] = [{"prompt": r["prompt"], "thought": thought, "answer": answer, "reference": r["answer"]}
                           for r, (answer, thought) in zip(rows, pairs)]
        if model_out is not None:
            save_thinking(model, cfg, model_out, Path(input_dir), {
                f"{cfg.task}_test_mean_thinking": out["scores"]["thoughts"][0]["test"],
                f"{cfg.task}_test_mean": out["extra"]["test_mean_plain"],
                "headline_test_mean": out["extra"]["headline_test_mean"],
                "headline_test_mean_thinking": out["extra"]["headline_test_mean_thinking"]})
    return out


def save_thinking(model, cfg: QuietStarConfig, out_dir: str | Path, input_dir: Path, metrics: dict) -> Path:
    """The seed-0 thinking model with a card giving its figures (plain weights and thinking apart)."""
    card = {"name": "forge-quietstar",
            "description": ("The input model trained with Quiet-STaR (Zelikman et al. 2024) on the serial task "
                            f"`{cfg.task}` (seed 0): it thinks {cfg.thought_tokens} tokens between "
                            "<|startthought|> and <|endthought|> after the prompt, and a mixing head "
                            "(mixing_head.safetensors, settings in quietstar.json) blends the answer "
                            "predictions with and without the thought. Plain transformers runs the weights "
                            "without thinking; `forgelib.quietstar.model.ThinkingModel.load` runs it thinking."),
            "parents": [str(input_dir)], "input_card": read_card(input_dir).get("name"),
            "data": {"task": cfg.task, "level": cfg.level, "data_seed": cfg.data_seed},
            "params": {"quietstar": to_dict(cfg)}, "metrics": metrics}
    return model.save(out_dir, card)


def write_curves(plots_dir: str | Path, curves: dict) -> None:
    """One TSV per arm (seed, step and the logged losses), for ``dvc plots``."""
    for arm, rows in curves.items():
        keys = list(dict.fromkeys(key for row in rows for key in row))
        lines = ["\t".join(keys)] + ["\t".join(str(row.get(key, "")) for key in keys) for row in rows]
        write_text_atomic(Path(plots_dir) / f"{arm}.tsv", "\n".join(lines) + "\n")


def run_quietstar(cfg: QuietStarConfig, *, data_dir: str | Path, input_dir: str | Path, out_dir: str | Path,
                  thinking_dir: str | Path, metrics_path: str | Path | None, plots_dir: str | Path | None) -> dict:
    """The stage (module docstring): measure the arms, ship the thinking model, pass a model on."""
    source = require_model_dir(input_dir, "quietstar input model")
    metrics, curves = measure_arms(cfg, data_dir=data_dir, input_dir=input_dir, model_out=thinking_dir)
    metrics["enabled"] = cfg.enabled
    metrics["continues_to_train"] = ("the thoughts model's weights (quietstar.enabled)" if cfg.enabled
                                     else "the input model, unchanged (quietstar.enabled: false)")
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(Path(thinking_dir) if cfg.enabled else source, tmp, dirs_exist_ok=True)
    if plots_dir:
        write_curves(plots_dir, curves)
    if metrics_path:
        write_json(metrics_path, metrics)
    return metrics
