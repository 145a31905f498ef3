"""`forge`: the command line of Forge. Every command wraps the same entry point a DVC stage calls.

Bad input (a params key out of range, a missing model directory, a tokenizer that does not fit)
prints ``error: ...`` naming what is wrong and where, and exits with code 2.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from forgelib.errors import EXIT_BAD_INPUT, ForgeError

app = typer.Typer(
    help="Forge builds language models the way make builds programs: evolve, train, specialize, compress "
    "as a DVC pipeline (dvc.yaml + params.yaml).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


NO_TORCH = {"dashboard", "analyze", "remote", "mcp"}
"""Commands that only read metrics or configure DVC: they skip the torch import (seconds of start-up)."""
PIECES = {"evo", "specialize", "agent"}
"""Commands that wrap a stage with worker processes: torch gets that stage's thread count
(forgelib.runtime.PIECE_THREADS), so the command computes what the stage computes."""


@app.callback()
def _setup(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand in NO_TORCH:
        return
    from forgelib.runtime import LOOP_THREADS, PIECE_THREADS, configure_torch

    configure_torch(PIECE_THREADS if ctx.invoked_subcommand in PIECES else LOOP_THREADS)


def _run(fn, *args, **kwargs):
    """Call an entry point; a ForgeError becomes a clear message and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except ForgeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


@app.command()
def validate(
    params: Path = typer.Option(Path("params.yaml"), "--params", help="The params file to check."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Also print the stages `dvc repro` would run (dvc status)."),
    explain: bool = typer.Option(False, "--explain", help="Print every key with its documentation and default."),
):
    """Check a params file against the config dataclasses; exit 2 naming the first bad key."""
    from forgelib.config import SECTIONS, load_params, section_class
    from forgelib.configtools import field_docs

    _run(load_params, params)
    typer.echo(f"{params}: valid ({', '.join(SECTIONS)})")
    if explain:
        from forgelib.compress.config import codec_setting_docs

        rows = [row for section in SECTIONS for row in field_docs(section_class(section), section + ".")]
        for key, text, default in rows + codec_setting_docs():
            typer.echo(f"{key} = {json.dumps(default, default=str)}\n    {text}")
    if dry_run:
        if shutil.which("dvc") is None:
            typer.echo("error: dvc is not on PATH; install the project with `make venv`", err=True)
            raise typer.Exit(EXIT_BAD_INPUT)
        status = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True)
        if status.returncode != 0:
            typer.echo(f"error: dvc status failed: {status.stderr.strip()}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT)
        changed = json.loads(status.stdout or "{}")
        stages = [name.split(":")[-1] for name in changed]
        typer.echo("stages `dvc repro` would run: " + (", ".join(stages) if stages else "none (up to date)"))


@app.command(
    "run-pipeline",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def run_pipeline(ctx: typer.Context):
    """Validate params.yaml, then run `dvc repro` with any extra options passed through (e.g.
    `forge run-pipeline -s train`). An invalid params.yaml exits 2 naming the key before DVC runs,
    so no output is deleted."""
    from forgelib.config import load_params

    if shutil.which("dvc") is None:
        typer.echo("error: dvc is not on PATH; install the project with `make venv`", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    _run(load_params, Path("params.yaml"))
    raise typer.Exit(subprocess.call(["dvc", "repro", *ctx.args]))


remote_app = typer.Typer(
    help="Share artifacts: the DVC remote `dvc push` uploads to and `dvc pull` downloads from.",
    no_args_is_help=True,
)
app.add_typer(remote_app, name="remote")


@remote_app.command("add")
def remote_add(
    url: str = typer.Argument(..., help="A local directory (stored as an absolute path) or a URL: "
                              "s3://bucket/path, gs://bucket/path, ssh://host/path (needs dvc-s3, dvc-gs, dvc-ssh)."),
    name: str = typer.Option("storage", "--name", help="The remote's name; one of that name is replaced."),
    local: bool = typer.Option(False, "--local", help="Write .dvc/config.local (gitignored, this machine only) "
                               "instead of .dvc/config (committed, shared with every clone)."),
):
    """Make URL the default DVC remote, so `dvc push` / `dvc pull` share data, models and resume
    state. Written to .dvc/config unless --local."""
    from forgelib.remote import add_remote

    stored, where = _run(add_remote, url, name=name, local=local)
    typer.echo(f"remote {name!r} -> {stored} (default) in {where}; now `dvc push`")


@remote_app.command("list")
def remote_list(as_json: bool = typer.Option(False, "--json", help="Print one JSON list.")):
    """The configured DVC remotes (.dvc/config and .dvc/config.local merged)."""
    from forgelib.remote import list_remotes

    remotes = _run(list_remotes)
    if as_json:
        typer.echo(json.dumps(remotes))
        return
    for remote in remotes:
        typer.echo(f"{remote['name']}\t{remote['url']}{'  (default)' if remote['default'] else ''}")


@app.command()
def tasks():
    """List the task generators: name, family, difficulty levels, an example."""
    import random

    from forgelib.data.tasks import TASKS

    for name, gen in TASKS.items():
        prompt, answer = gen.sample(1, random.Random(0))
        typer.echo(f"{name:12s} family={gen.family:10s} levels=1..{gen.max_level}  e.g. {prompt}{answer}")


@app.command("test")
def test_generation(
    model_path: Path = typer.Option(..., "--model-path", help="An HF model directory or a compressed container (file or its directory)."),
    prompt: str = typer.Option(..., "--prompt", help="The prompt to complete."),
    max_new_tokens: int = typer.Option(64, help="Tokens to generate."),
    temperature: float = typer.Option(0.0, help="0 = greedy; > 0 samples."),
    seed: int = typer.Option(0, help="Sampling seed."),
    show_thoughts: bool = typer.Option(False, "--show-thoughts", help="A thinking (Quiet-STaR) model: print the "
                                       "hidden thought before the answer."),
):
    """Generate from a model, streaming tokens; uses the chat template when the model has one.

    A specialized model answers with the SVF expert its dispatcher picks for the prompt; a
    thinking model thinks first (the thought stays hidden unless --show-thoughts)."""
    from forgelib.runners import load_runner

    runner = _run(load_runner, model_path)
    pieces = runner.stream(prompt, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                           show_thoughts=show_thoughts)
    for piece in _run(list, pieces) if runner.kind == "thinking" else pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


@app.command("eval")
def eval_command(
    model_dir: Optional[Path] = typer.Argument(None, help="An HF model directory or a compressed container (or use --model-path)."),
    model_path: Optional[Path] = typer.Option(None, "--model-path", help="Same as MODEL_DIR."),
    benchmark: str = typer.Option("tasks", "--benchmark", help="'tasks' (the algorithmic suite), 'humaneval', or "
                                   "'codeppl' (perplexity on the Python standard library's source)."),
    data: Path = typer.Option(Path("data"), help="Prepared data directory (tasks benchmark)."),
    split: str = typer.Option("test", help="train, validation or test."),
    limit: Optional[int] = typer.Option(None, help="At most this many examples per task (problems for humaneval)."),
    samples: Optional[Path] = typer.Option(None, "--samples", help="humaneval: score a JSONL of {task_id, completion} without a model."),
    k: str = typer.Option("1", "--k", help="humaneval: comma list of k for pass@k."),
    n_samples: int = typer.Option(1, "--n-samples", help="humaneval: completions per problem."),
    temperature: float = typer.Option(0.0, help="humaneval: sampling temperature (0 = greedy)."),
    max_tokens: int = typer.Option(20000, "--max-tokens", help="codeppl: predicted tokens to score."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="codeppl: window length (default: min(512, the model's context))."),
    seed: int = typer.Option(0, help="humaneval: sampling seed; codeppl: which files and windows are drawn."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Evaluate a model: exact match per task/family on held-out data, HumanEval pass@k, or code perplexity.

    The tasks benchmark runs a model the way it answers: a specialized model adapts per prompt
    (SVF expert chosen by its dispatcher), a thinking model thinks before each answer. Plain
    transformers (`from_pretrained`) sees neither: that figure is the stage metrics' test_mean."""
    directory = model_dir or model_path
    if benchmark not in BENCHMARKS:
        _fail(f"--benchmark: unknown benchmark {benchmark!r}; valid: {', '.join(BENCHMARKS)}")
    if benchmark == "humaneval":
        ks = _run(_parse_ks, k)
        if samples is not None:  # score completions made elsewhere: no model involved
            if directory is not None:
                _fail("--samples scores completions made elsewhere; do not also pass a model")
            from forgelib.eval.humaneval import load_samples, score_samples

            return _emit(_run(lambda: score_samples(load_samples(samples), k=ks)), as_json)
        if directory is None:
            _fail("--benchmark humaneval needs --model-path DIR (to generate) or --samples FILE.jsonl (to score)")
        if n_samples > 1 and temperature <= 0:
            _fail("--n-samples > 1 needs --temperature > 0 (greedy samples are identical)")
    if directory is None:
        _fail("pass a model directory (MODEL_DIR or --model-path)")
    if benchmark == "tasks" and split not in SPLITS:
        _fail(f"--split: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    from forgelib.runners import load_runner

    runner = _run(load_runner, directory)
    model, tokenizer = runner.model, runner.tokenizer
    if benchmark == "tasks":
        from forgelib.data.tasks import load_tasks

        result = _run(lambda: runner.evaluate(load_tasks(data), split=split, limit=limit))
    elif benchmark == "humaneval":
        from forgelib.eval.humaneval import run_humaneval

        result = _run(run_humaneval, model, tokenizer, k=ks, limit=limit, n_samples=n_samples,
                      temperature=temperature, seed=seed).report
    else:
        from forgelib.eval.codeppl import code_perplexity

        context = getattr(model.config, "max_position_embeddings", None) or 512
        result = _run(code_perplexity, model, tokenizer, max_tokens=max_tokens, seq_len=seq_len or min(512, context),
                      seed=seed)
    _emit(result, as_json)


BENCHMARKS = ("tasks", "humaneval", "codeppl")
SPLITS = ("train", "validation", "test")


def _parse_ks(ks: str) -> tuple[int, ...]:
    try:
        values = tuple(int(k) for k in ks.split(",") if k.strip())
    except ValueError:
        raise ForgeError(f"--k: expected a comma list of positive integers, got {ks!r}") from None
    if not values or min(values) < 1:
        raise ForgeError(f"--k: expected a comma list of positive integers, got {ks!r}")
    return values


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def _emit(result, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
    else:
        _print_json(result)


@app.command()
def prepare(
    params: Path = typer.Option(Path("params.yaml"), help="The params file (section `prepare`)."),
    out: Path = typer.Option(Path("data"), help="Output data directory."),
):
    """Generate the task datasets and the tokenizer (the `prepare` stage)."""
    from forgelib.config import load_section
    from forgelib.data.prepare import prepare as run_prepare

    stats = _run(lambda: run_prepare(load_section("prepare", params), out))
    _print_json(stats)


@app.command()
def init(
    profile: str = typer.Option(..., "--profile", help="A shipped profile: " + ", ".join(
        p.stem for p in sorted((Path(__file__).parent / "profiles").glob("*.yaml")))),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Where to write it."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing params file."),
):
    """Write a shipped params profile (e.g. `forge init --profile smollm2` for the real model)."""
    from forgelib.config import load_params
    from forgelib.io import write_text_atomic

    source = Path(__file__).parent / "profiles" / f"{profile}.yaml"
    if not source.is_file():
        valid = ", ".join(p.stem for p in sorted(source.parent.glob("*.yaml")))
        typer.echo(f"error: --profile: unknown profile {profile!r}; valid: {valid}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    if params.exists() and not force:
        typer.echo(f"error: {params} exists; pass --force to overwrite it (git keeps the old one)", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    _run(load_params, source)
    write_text_atomic(params, source.read_text())
    typer.echo(f"wrote {params} from profile {profile!r}; run `dvc repro` (or `make repro`)")


@app.command()
def merge(
    config: Path = typer.Argument(..., help="A mergekit-compatible YAML recipe."),
    out_dir: Path = typer.Argument(..., help="Output HF model directory (written atomically)."),
    seed: int = typer.Option(0, help="Seed of the random masks of dare_*/della* methods."),
):
    """Merge models from a mergekit-compatible YAML (paths resolve against the current directory)."""
    from forgelib.merge.engine import merge_from_yaml

    path = _run(merge_from_yaml, config, out_dir, seed=seed, progress=True)
    typer.echo(f"wrote {path}")


@app.command()
def evo(
    params: Path = typer.Option(Path("params.yaml"), help="Params file (sections `evomerge`, `base`)."),
    data: Path = typer.Option(Path("data"), help="Prepared data directory."),
    models: Path = typer.Option(Path("models/base"), help="Directory with ancestor/ and the specialists."),
    out: Path = typer.Option(Path("models/evolved"), help="Output model directory."),
    state: Path = typer.Option(Path("checkpoints/evomerge"), help="Resumable search state."),
    generations: Optional[int] = typer.Option(None, help="Override evomerge.generations."),
    population: Optional[int] = typer.Option(None, help="Override evomerge.population."),
    metrics: Path = typer.Option(Path("metrics/evomerge.json"), help="Where to write the metrics JSON."),
):
    """Run the evolutionary merge search (the `evomerge` stage) with a progress bar over generations."""
    import dataclasses

    from forgelib.config import load_section
    from forgelib.merge.run import run_evomerge

    def go():
        cfg = load_section("evomerge", params)
        overrides = {k: v for k, v in {"generations": generations, "population": population}.items() if v is not None}
        cfg = dataclasses.replace(cfg, **overrides)
        specialists = load_section("base", params).specialists
        return run_evomerge(cfg, data_dir=data, base_model=str(models / "ancestor"),
                            parents={name: str(models / name) for name in specialists},
                            out_dir=out, state_dir=state, metrics_path=metrics, plots_dir=None)

    result = _run(go)
    typer.echo(json.dumps({k: result[k] for k in ("evolved_test_mean", "best_parent_test_mean",
                                                  "uniform_task_arithmetic_test_mean", "best_method")}, indent=2))


@app.command()
def dashboard(
    out: Path = typer.Option(Path("report"), "--out", help="Output directory; the page is OUT/index.html."),
    metrics: Path = typer.Option(Path("metrics"), "--metrics", help="The run's metrics directory."),
    dvc_template: bool = typer.Option(False, "--dvc-template", help="Also make `dvc plots show` work offline: write "
                                      ".dvc/offline-plots.html (vega inlined) and set plots.html_template in "
                                      ".dvc/config.local."),
):
    """Write one offline HTML page of the run: phases, costs, EvoMerge fitness, training curves with
    grokking stages, controllers, compression frontier (static SVG, no network needed)."""
    from forgelib.dashboard import build_dashboard, install_dvc_template

    if not metrics.is_dir():
        _fail(f"--metrics: {metrics} is not a directory; run `dvc repro` first or pass --metrics DIR")
    result = _run(build_dashboard, metrics, out)
    typer.echo(f"wrote {result['path']} ({result['bytes'] / 1000:.0f} kB, {result['charts']} charts, "
               f"{result['seconds']:.1f} s)")
    if dvc_template:
        typer.echo(f"wrote {_run(install_dvc_template, '.')}; `dvc plots show` now renders offline")


@app.command()
def analyze(
    metrics: Path = typer.Option(Path("metrics"), "--metrics", help="The run's metrics directory."),
    as_json: bool = typer.Option(False, "--json", help='Print {"phases": {NAME: {"test_mean", "wall_s", '
                                 '"peak_rss_gib", "gates", ...}}, "total", "all_gates_passed"}.'),
    compare: Optional[str] = typer.Option(None, "--compare", help="A git revision: add per-phase changes from "
                                          "`dvc metrics diff REV --json`."),
):
    """Per phase: what it cost (wall_s, peak_rss_gib), what it bought (test mean and the change from the
    model it started from), which gates passed, and the training controllers' state."""
    from forgelib.analyze import analyze as run_analyze
    from forgelib.analyze import compare as compare_phases
    from forgelib.analyze import dvc_metrics_diff, format_analysis

    if not metrics.is_dir():
        _fail(f"--metrics: {metrics} is not a directory; run `dvc repro` first or pass --metrics DIR")
    result = run_analyze(metrics)
    if compare is not None:
        if shutil.which("dvc") is None:
            _fail("--compare needs dvc on PATH; install the project with `make venv`")
        result["compare"] = {"rev": compare, "phases": compare_phases(_run(dvc_metrics_diff, compare),
                                                                      order=list(result["phases"]))}
    typer.echo(json.dumps(result, indent=2) if as_json else format_analysis(result))  # phases in DAG order


training_app = typer.Typer(help="Phase 2: the Forge training loop.", no_args_is_help=True)
app.add_typer(training_app, name="training")


@training_app.command("train")
def training_train(
    model_path: Path = typer.Option(Path("models/evolved"), "--model-path", help="HF model directory to train."),
    out: Path = typer.Option(Path("models/trained"), help="Output model directory."),
    params: Path = typer.Option(Path("params.yaml"), help="Params file (section `train`)."),
    data: Path = typer.Option(Path("data"), help="Prepared data directory."),
    checkpoints: Path = typer.Option(Path("checkpoints/train"), help="Checkpoint directory (resumes from it)."),
    metrics_dir: Path = typer.Option(Path("metrics/train"), help="dvclive output directory."),
    max_steps: Optional[int] = typer.Option(None, help="Override train.max_steps."),
    enable_grokfast: bool = typer.Option(False, "--enable-grokfast", help="Turn on the Grokfast gradient filter."),
    enable_edge: bool = typer.Option(False, "--enable-edge", help="Turn on the edge-of-chaos curriculum."),
    enable_self_model: bool = typer.Option(False, "--enable-self-model", help="Turn on the self-model head."),
    enable_dreams: bool = typer.Option(False, "--enable-dreams", help="Turn on dream cycles."),
    enable_all: bool = typer.Option(False, "--enable-all", help="Turn on every enhancement."),
    wandb_project: Optional[str] = typer.Option(None, "--wandb-project", help="Also log to Weights & Biases."),
):
    """Train a model with the Forge loop; enhancements come from params.yaml plus --enable-* flags."""
    import dataclasses

    from forgelib.config import load_section
    from forgelib.train.run import run_train

    def go():
        cfg = load_section("train", params)
        flags = {"grokfast": enable_grokfast, "edge": enable_edge, "self_model": enable_self_model,
                 "dreams": enable_dreams, "all": enable_all}
        cfg = cfg.with_enabled(*[name for name, on in flags.items() if on]).with_wandb(wandb_project)
        if max_steps is not None:
            cfg = dataclasses.replace(cfg, max_steps=max_steps)
        return run_train(cfg, data_dir=data, input_dir=model_path, out_dir=out, checkpoint_dir=checkpoints,
                         metrics_dir=metrics_dir)

    result = _run(go)
    typer.echo(json.dumps({k: result[k] for k in ("test_mean", "input_test_mean", "perplexity")}, indent=2))


@training_app.command("analyze")
def training_analyze(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A step-* checkpoint or the checkpoint directory."),
    plots: Path = typer.Option(Path("metrics/analysis"), help="Where to write PNG plots."),
    as_json: bool = typer.Option(False, "--json", help="Print the analysis as JSON."),
):
    """Print a checkpoint's trajectory, grokking stages and controller states; write plots."""
    from forgelib.train.analyze import analyze_checkpoint, format_analysis, write_plots

    analysis = _run(analyze_checkpoint, checkpoint)
    written = write_plots(analysis, plots)
    typer.echo(json.dumps(analysis, indent=2, default=str) if as_json else format_analysis(analysis))
    typer.echo(f"plots: {', '.join(str(p) for p in written)}", err=True)


compression_app = typer.Typer(help="Phase 4: two-stage compression into one container.", no_args_is_help=True)
app.add_typer(compression_app, name="compression")


@compression_app.command("compress")
def compression_compress(
    input_dir: Path = typer.Option(Path("models/trained"), "--input", help="HF model directory to compress."),
    output: Path = typer.Option(Path("models/compressed"), "--output", help="Output directory (stage1/, final/)."),
    stages: int = typer.Option(2, "--stages", help="1 (stage 1 only) or 2 (stage 2 re-encodes stage 1's output); codecs per group from --params `compress`."),
    target_size: Optional[float] = typer.Option(None, "--target-size", help="Final size as a fraction of fp32 bytes."),
    params: Path = typer.Option(Path("params.yaml"), help="Params file (section `compress`)."),
    data: Path = typer.Option(Path("data"), help="Prepared data (evaluation, heal and calibration batches)."),
    limit: Optional[int] = typer.Option(None, help="Evaluate on at most this many examples per task."),
    metrics: Optional[Path] = typer.Option(None, help="Also write the stats JSON here."),
):
    """Compress any supported HF model directory; print bytes, bits/param, retention per stage."""
    from forgelib.compress.run import run_compress
    from forgelib.config import load_section

    def go():
        return run_compress(load_section("compress", params), data_dir=data, input_dir=input_dir, out_dir=output,
                            stages=stages, target_size=target_size, metrics_path=metrics, eval_limit=limit)

    stats = _run(go)
    keys = ("bytes", "bits_per_param", "fraction_fp32", "test_mean", "retention")
    typer.echo(json.dumps({"input_test_mean": stats["input_test_mean"],
                           **{s: {k: stats[s].get(k) for k in keys} for s in ("stage1", "final")}}, indent=2))


@compression_app.command("decompress")
def compression_decompress(
    container: Path = typer.Argument(..., help="A model.forge.safetensors container."),
    out_dir: Path = typer.Argument(..., help="Output HF model directory."),
):
    """Decode a container back into an HF model directory (safetensors, config, tokenizer)."""
    from forgelib.compress.loader import decompress_to_dir

    path = _run(decompress_to_dir, container, out_dir)
    typer.echo(f"wrote {path}")


@app.command("specialize")
def specialize_command(
    params: Path = typer.Option(Path("params.yaml"), help="Params file; its `specialize` section is used."),
    data: Path = typer.Option(Path("data"), help="Prepared data directory."),
    input_dir: Path = typer.Option(Path("models/trained"), "--input", help="HF model directory to specialize."),
    out: Path = typer.Option(Path("models/specialized"), help="Output HF directory (baked weights + SVF experts)."),
    svd: Path = typer.Option(Path("checkpoints/specialize"), help="SVD cache (reused while the weights are the same)."),
    metrics: Path = typer.Option(Path("metrics/specialize.json"), help="Metrics JSON to write."),
    plots: Path = typer.Option(Path("metrics/specialize"), help="Folder for the TSV plots."),
):
    """Phase 3a, the `specialize` stage's code path: bake a prompt (when one helps on validation),
    train one SVF expert per task family (Transformer²: singular values rescaled by z), their
    LoRA rank-4 and full fine-tune baselines, a dispatcher expert, and a few-shot CEM mixing on an
    unseen composite task. The output loads in plain transformers as the baked model; `forge eval`
    and `forge serve` run it with per-prompt expert dispatch."""
    from forgelib.config import load_section
    from forgelib.specialize.run import run_specialize

    cfg = _run(load_section, "specialize", params)
    result = _run(run_specialize, cfg, data_dir=data, input_dir=input_dir, out_dir=out, svd_dir=svd,
                  metrics_path=metrics, plots_dir=plots)
    typer.echo(f"wrote {out}: test_mean {result['test_mean']:.3f} (plain weights), "
               f"test_mean_adapted {result['test_mean_adapted']:.3f} (with dispatch); metrics in {metrics}")


agent_app = typer.Typer(help="Phase 3b: run and score agent designs (the ADAS DSL, agents/best.json).",
                        no_args_is_help=True)
app.add_typer(agent_app, name="agent")


def _agent_backend(model_path: Path, tool_model: Optional[Path], design_path: Path, memory_per_task: int, data: Path):
    """(design, backend, client): a validated design and what it runs on (the client must be closed)."""
    from forgelib.agents.mcp_client import McpClient
    from forgelib.agents.run import load_design, make_backend

    needs_tools = any(b["block"] in ("ToolCall", "Verify") for b in load_design(design_path)["blocks"])
    client = McpClient() if needs_tools and tool_model is not None else None
    if client is not None:
        client.start()
    try:
        memory = None
        if any(b["block"] == "MemoryLookup" for b in load_design(design_path)["blocks"]):
            from forgelib.agents.backend import training_memory
            from forgelib.data.tasks import load_tasks

            memory = training_memory(load_tasks(data), per_task=memory_per_task, seed=0)
        backend = make_backend(model_path, tool_model if needs_tools else None, client, memory=memory)
        design = load_design(design_path, backend.families)
    except BaseException:
        if client is not None:
            client.close()
        raise
    return design, backend, client


@agent_app.command("run")
def agent_run(
    design: Path = typer.Option(Path("agents/best.json"), "--design", help="An agent design (JSON DSL)."),
    model_path: Path = typer.Option(Path("models/specialized"), "--model-path",
                                    help="The generating model (its SVF experts serve Route blocks)."),
    prompt: str = typer.Option(..., "--prompt", help="The prompt to answer."),
    tool_model: Optional[Path] = typer.Option(Path("models/agents"), "--tool-model",
                                              help="The tool-trained model that writes calculator calls."),
    data: Path = typer.Option(Path("data"), help="Prepared data (the memory of MemoryLookup blocks)."),
    memory_per_task: int = typer.Option(200, help="Training examples per task in that memory."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer and the model calls as JSON."),
):
    """Answer one prompt with an agent design, calling tools through the MCP server (stdio)."""
    from forgelib.agents.adas import run_design

    spec, backend, client = _run(_agent_backend, model_path, tool_model, design, memory_per_task, data)
    try:
        outcome = _run(run_design, spec, backend, [prompt])
    finally:
        if client is not None:
            client.close()
    if as_json:
        return _print_json({"design": spec["name"], "answer": outcome.answers[0], "model_calls": outcome.calls[0]})
    typer.echo(outcome.answers[0])


@agent_app.command("eval")
def agent_eval(
    design: Path = typer.Option(Path("agents/best.json"), "--design", help="An agent design (JSON DSL)."),
    model_path: Path = typer.Option(Path("models/specialized"), "--model-path", help="The generating model."),
    tool_model: Optional[Path] = typer.Option(Path("models/agents"), "--tool-model", help="The tool-trained model."),
    data: Path = typer.Option(Path("data"), help="Prepared data directory."),
    split: str = typer.Option("test", help="train, validation or test."),
    limit: Optional[int] = typer.Option(None, help="At most this many items per task."),
    memory_per_task: int = typer.Option(200, help="Training examples per task in the MemoryLookup memory."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Score an agent design on a split: exact match per task, overall, and model calls per item."""
    from forgelib.agents.adas import run_design
    from forgelib.agents.run import per_task_accuracy, split_items
    from forgelib.data.tasks import load_tasks

    if split not in SPLITS:
        _fail(f"--split: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    items = split_items(_run(load_tasks, data), split, limit, 0)
    spec, backend, client = _run(_agent_backend, model_path, tool_model, design, memory_per_task, data)
    try:
        outcome = _run(run_design, spec, backend, [r["prompt"] for r in items], [r["answer"] for r in items])
    finally:
        if client is not None:
            client.close()
    _emit({"design": spec["name"], "split": split, "items": len(items), "accuracy": outcome.accuracy,
           "calls_per_item": outcome.calls_per_item, "tasks": per_task_accuracy(items, outcome)}, as_json)


mcp_app = typer.Typer(help="Phase 3b: Forge's tools (calculate, run_python, memory_lookup) over MCP.",
                      no_args_is_help=True)
app.add_typer(mcp_app, name="mcp")


@mcp_app.command("serve")
def mcp_serve(
    memory: Optional[Path] = typer.Option(None, "--memory", help="An episodic memory saved by forgelib.agents.memory; "
                                          "without it memory_lookup answers with the tool error 'memory is empty'."),
):
    """Serve calculate, run_python and memory_lookup over MCP on stdio (stdout carries the protocol
    only; logs go to stderr). Runs until the client closes stdin."""
    from forgelib.agents.mcp_server import serve as serve_mcp

    _run(serve_mcp, memory)


@app.command("export")
def export_command(
    model_path: Path = typer.Argument(..., help="An HF model directory or a compressed container (file or its directory)."),
    out: Path = typer.Argument(..., help="OUT.gguf for --format gguf; an output directory for --format hf."),
    fmt: str = typer.Option(..., "--format", help="gguf (one file, llama.cpp's Llama layout) or hf (safetensors, "
                            "config.json and tokenizer files that transformers loads alone)."),
    gguf_type: Optional[str] = typer.Option(None, "--gguf-type", help="GGUF type of the 2-D weights: f16 (default), "
                                            "f32, q8_0, q4_0, tq1_0, tq2_0; a weight the type cannot hold is F16, "
                                            "norms are F32."),
    check: bool = typer.Option(False, "--check", help="Read the export back with transformers and compare its logits "
                               "and greedy output with the source model's on --data's validation rows."),
    data: Path = typer.Option(Path("data"), help="Prepared data directory (--check's validation rows)."),
    prompts_per_task: int = typer.Option(8, "--prompts-per-task", help="--check: validation rows per task."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON line."),
):
    """Export a model (a container is decoded first: its codecs have no GGUF type) as GGUF or a plain HF
    directory. Prints the type of every GGUF tensor on stderr and a JSON report (bytes vs the source;
    with --check, max |logit diff|, top-1 agreement, tokenizer and greedy match) on stdout."""
    from forgelib.export.run import export_model, tensor_line

    report = _run(export_model, model_path, fmt, out, gguf_type=gguf_type, check_data=data if check else None,
                  prompts_per_task=prompts_per_task, on_tensor=lambda record: typer.echo(tensor_line(record), err=True))
    _emit(report, as_json)


@app.command()
def serve(
    model_path: Path = typer.Argument(..., help="An HF model directory or a compressed container (file or its directory)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default; 0.0.0.0 exposes it)."),
    port: int = typer.Option(8000, help="TCP port (0 picks a free one)."),
    model_name: str = typer.Option(None, "--model-name", help="The id clients send as `model` (default: the path as given)."),
    max_pending: int = typer.Option(32, "--max-pending", min=1,
                                    help="Requests admitted at once (running + queued); one more gets HTTP 429."),
    engine: str = typer.Option("torch", "--engine",
                               help="Forward pass: torch (transformers, default) or llama-cpp (llama.cpp on the model "
                                    "exported as GGUF at start-up; needs `pip install llama-cpp-python`)."),
    gguf_type: str = typer.Option("f16", "--gguf-type",
                                  help="With --engine llama-cpp: the GGUF tensor type (f16, f32, q8_0, q4_0, tq1_0, tq2_0)."),
):
    """Serve a model over an OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions
    (stream: true for server-sent events), /v1/models and /health. Requests run one at a time;
    logs go to stderr. A specialized model adapts per request (its dispatcher picks the SVF expert;
    --engine torch only)."""
    from forgelib.runners import load_runner
    from forgelib.serve import ModelServer, make_server
    from forgelib.serve_engines import check_engine, engine_for

    _run(check_engine, engine, gguf_type)
    runner = _run(load_runner, model_path)
    if runner.kind == "thinking":
        typer.echo("note: a thinking model is served without its thoughts (plain weights, no mixing head); "
                   "`forge test --show-thoughts` runs it with them", err=True)
    server = ModelServer(runner.model, runner.tokenizer, model_id=model_name or str(model_path), max_pending=max_pending,
                         adapt=runner.adapt if runner.kind == "specialized" else None,
                         engine=_run(engine_for, runner, engine, gguf_type=gguf_type))
    try:
        httpd = make_server(server, host, port)
    except OSError as exc:
        server.close()
        typer.echo(f"error: cannot bind {host}:{port}: {exc.strerror}; pick another --port", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    bound_host, bound_port = httpd.server_address[:2]
    typer.echo(f"serving {server.model_id!r} at http://{bound_host}:{bound_port}/v1 with {server.engine.describe()} "
               "(Ctrl-C stops)", err=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        server.close()


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover - `python -m forgelib.cli`
    main()
