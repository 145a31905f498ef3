"""The streaming merge engine: a mergekit-compatible recipe in, a Hugging Face directory out.

The plan follows mergekit's planner: non-layer tensors whose name contains ``embed`` come first,
merged from the first slice's sources at gradient position ``t = 0``; then every slice's layers,
``t = i / (n - 1)`` within the slice (``1`` for a one-layer slice), renumbered consecutively;
then the remaining non-layer tensors (final norm, ``lm_head``) from the last slice, also at
``t = 0``: mergekit 0.1.5 evaluates them there (releases before its ``modules`` rewrite used
``t = 1``), and we match the current release so a recipe gives the same model in both tools.
Tied embeddings need no special case: the output holds exactly the non-layer tensors the
config model's file holds, so a tied model (no ``lm_head.weight``) stays tied.

Everything that can be wrong with a recipe (unknown keys, missing parameters, architectures,
vocabularies or shapes that differ) is checked from config files and safetensors headers before
the first weight is read. Tensors are then merged one at a time (see ``tensor_io``) and the
directory (``model.safetensors``, config.json, tokenizer files, README.md model card,
``recipe.yaml``) appears atomically.

Numerics: inputs are cast to the recipe's ``dtype`` when given (as mergekit does) and saved as
``out_dtype`` (default ``dtype``, else the input's dtype). For float32 recipes every deterministic
method matches mergekit 0.1.5 tensor for tensor (max difference 1.8e-7 on tiny Llamas). For
float16/bfloat16 recipes we deliberately merge in float32: mergekit subtracts and sums in the
narrow dtype, so its task vectors (tiny differences of large weights) carry bfloat16 rounding
error; ours round once, at the end. The two then differ (bfloat16, tiny Llamas: 0.4% of entries
for linear, ~40% for task arithmetic and TIES, where rounded deltas also move the trim).

Memory: one output tensor is in flight at a time. Methods flagged ``rowwise`` (linear, task
arithmetic, DARE, DELLA, passthrough) merge large tensors in row blocks of ~``CHUNK_ELEMENTS``,
reading only those rows, so their peak is a few blocks whatever the embedding size; methods with
a whole-tensor statistic (TIES and Breadcrumbs top-k cuts, SLERP angles, Model Stock cosines)
hold their largest tensor's inputs and intermediates at once (``bench/merge.py`` measures both).

Random drop masks (DARE, DELLA) come from one generator per input model, seeded by
``sha256(seed, tensor name, model index)`` and consumed in order, so a recipe plus a seed always
gives the same model, with or without row blocks.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from tqdm import tqdm

from forgelib.errors import ForgeError
from forgelib.io import atomic_dir
from forgelib.merge.methods.base import REQUIRED, MergeInputs
from forgelib.merge.recipe import Recipe, Slice, evaluate_setting, load_recipe_yaml, parse_recipe
from forgelib.merge.tensor_io import ModelReader, StreamingWriter
from forgelib.models import compat
from forgelib.models.card import write_card
from forgelib.models.dtypes import DTYPES, dtype_name

LAYER = re.compile(r"^(?P<prefix>(?:.*\.)?(?:layers|h|blocks)\.)(?P<index>\d+)\.(?P<rest>.+)$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "added_tokens.json", "vocab.json", "merges.txt",
                   "chat_template.jinja", "generation_config.json")
CHUNK_ELEMENTS = 1 << 20  # rowwise methods merge ~1M-element row blocks (4 MiB per fp32 input)


@dataclass(frozen=True)
class Job:
    """One output tensor: its name, the slice it comes from and each source's input name."""

    name: str
    slice: Slice
    inputs: tuple[str, ...]
    t: float
    shape: tuple[int, ...]
    dtype: torch.dtype


def merge_from_yaml(config_path: str | Path, out_dir: str | Path, *, seed: int = 0,
                    progress: bool = False) -> Path:
    """``forge merge CONFIG.yaml OUT_DIR``: merge a mergekit YAML file into ``out_dir``."""
    raw = load_recipe_yaml(config_path)
    return merge_recipe(raw, out_dir, seed=seed, progress=progress, where=str(config_path),
                        recipe_text=Path(config_path).read_text())


def merge_recipe(recipe: dict[str, Any], out_dir: str | Path, *, seed: int = 0,
                 progress: bool = False, where: str = "recipe",
                 recipe_text: str | None = None) -> Path:
    """Merge a recipe (the dict a mergekit YAML parses to) into the HF directory ``out_dir``."""
    parsed = parse_recipe(recipe, where=where)
    check_compatible(parsed)
    readers = {p: ModelReader(p) for p in parsed.model_paths()}
    jobs = plan(parsed, readers)
    calls = [_resolve(parsed, job) for job in jobs]
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        specs = [(j.name, j.shape, j.dtype) for j in jobs]
        with StreamingWriter(tmp / "model.safetensors", specs) as writer:
            bar = tqdm(list(zip(jobs, calls)), desc="merge", unit="tensor", disable=not progress)
            for job, call in bar:
                for block in _run(parsed, readers, job, call, seed):
                    writer.write(job.name, block)
        _write_config(parsed, readers, jobs, tmp)
        tokenizer_from = parsed.tokenizer_path or parsed.config_path()
        for name in TOKENIZER_FILES:
            if (tokenizer_from / name).is_file():
                shutil.copy2(tokenizer_from / name, tmp / name)
        text = recipe_text if recipe_text is not None else yaml.safe_dump(recipe, sort_keys=False)
        (tmp / "recipe.yaml").write_text(text)
        write_card(tmp, model_card(parsed, recipe, seed, out.name))
    return out


def check_compatible(recipe: Recipe) -> None:
    """Every model's files intact, one architecture and one vocabulary, before a tensor is read
    (:func:`forgelib.models.compat.check_compatible`; depths may differ: slices pick layers)."""
    compat.check_compatible(recipe.model_paths(), same_depth=False)


def _layers(reader: ModelReader) -> dict[int, list[tuple[str, str]]]:
    """Layer index -> [(prefix, rest)] in file order: 3 -> [("model.layers.", "mlp.up_proj.weight")]."""
    out: dict[int, list[tuple[str, str]]] = {}
    for name in reader.names():
        m = LAYER.match(name)
        if m:
            out.setdefault(int(m["index"]), []).append((m["prefix"], m["rest"]))
    return out


def plan(recipe: Recipe, readers: dict[Path, ModelReader]) -> list[Job]:
    """Every output tensor in file order, with shapes checked across sources."""
    ref = readers[recipe.config_path()]
    other = [n for n in ref.names() if not LAYER.match(n)]
    pre, post = [n for n in other if "embed" in n], [n for n in other if "embed" not in n]
    first, last = recipe.slices[0], recipe.slices[-1]
    jobs = [_job(recipe, readers, first, n, (n,) * len(first.sources), 0.0) for n in pre]
    out_layer = 0
    for sl in recipe.slices:
        lead = sl.sources[0]
        layout = _layers(readers[lead.path])
        for i in range(sl.num_layers):
            t = i / (sl.num_layers - 1) if sl.num_layers > 1 else 1.0
            for prefix, rest in layout.get(lead.layer_range[0] + i, []):
                inputs = tuple(f"{prefix}{s.layer_range[0] + i}.{rest}" for s in sl.sources)
                jobs.append(_job(recipe, readers, sl, f"{prefix}{out_layer}.{rest}", inputs, t))
            out_layer += 1
    jobs += [_job(recipe, readers, last, n, (n,) * len(last.sources), 0.0) for n in post]
    return jobs


def _job(recipe: Recipe, readers: dict[Path, ModelReader], sl: Slice, name: str,
         inputs: tuple[str, ...], t: float) -> Job:
    shapes = {}
    for src, inp in zip(sl.sources, inputs):
        if inp not in readers[src.path].specs:
            raise ForgeError(f"tensor {inp} is missing from {src.model}; cannot merge {name}")
        shapes[src.model] = readers[src.path].shape(inp)
    if len(set(shapes.values())) > 1:
        raise ForgeError(f"tensor {name}: shapes differ between models ({shapes}); "
                         "merging needs identical shapes")
    dtype_name = recipe.out_dtype or recipe.dtype
    dtype = DTYPES[dtype_name] if dtype_name else readers[sl.sources[0].path].dtype(inputs[0])
    return Job(name, sl, inputs, t, shapes[sl.sources[0].model], dtype)


@dataclass(frozen=True)
class _Call:
    base: int | None  # index into the slice's sources
    models: tuple[int, ...]
    model_params: tuple[dict[str, Any], ...]
    params: dict[str, Any]


def _lookup(recipe: Recipe, sl: Slice, name: str, params: dict | None, tensor: str,
            t: float) -> Any:
    """mergekit's precedence: the source's own parameters, then the slice's, then top-level."""
    for scope in (params, sl.parameters, recipe.parameters):
        if scope and name in scope:
            value = evaluate_setting(scope[name], tensor, t)
            if value is not None:
                return value
    return None


def _typed(param, value: Any, where: str) -> Any:
    if value is None:
        if param.default is REQUIRED:
            raise ForgeError(f"{where}: missing required parameter {param.name!r}")
        return param.default
    ok = isinstance(value, bool) if param.kind is bool else (
        isinstance(value, (int, float)) and not isinstance(value, bool))
    if not ok:
        raise ForgeError(f"{where}: parameter {param.name!r} expects a {param.kind.__name__}, "
                         f"got {value!r}")
    return param.kind(value)


def _resolve(recipe: Recipe, job: Job) -> _Call:
    method, sl = recipe.method, job.slice
    base_path = sl.base_path or recipe.base_path
    base = None
    if method.base != "none" and base_path is not None:
        base = next((i for i, s in enumerate(sl.sources) if s.path == base_path), None)
    if method.base == "required" and base is None:
        raise ForgeError(f"{method.name} needs base_model, and it must be one of the slice's "
                         f"sources (tensor {job.name})")
    models = tuple(i for i in range(len(sl.sources)) if i != base)
    if len(models) < method.min_models or (method.max_models and len(models) > method.max_models):
        limit = f"{method.min_models}..{method.max_models or 'any'}"
        raise ForgeError(f"{method.name} merges {limit} models besides the base, got {len(models)} "
                         f"(tensor {job.name})")
    params = {p.name: _typed(p, _lookup(recipe, sl, p.name, None, job.name, job.t), job.name)
              for p in method.global_params}
    model_params = []
    for i in models:
        src, where = sl.sources[i], f"{sl.sources[i].model} tensor {job.inputs[i]}"
        model_params.append({p.name: _typed(p, _lookup(recipe, sl, p.name, src.parameters,
                                                       job.inputs[i], job.t), where)
                             for p in method.model_params})
    return _Call(base, models, tuple(model_params), params)


def tensor_seed(seed: int, name: str, model: int) -> int:
    blob = f"{seed}:{name}:{model}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1


def row_blocks(recipe: Recipe, shape: tuple[int, ...]) -> list[tuple[int, int] | None]:
    """Row ranges to merge one at a time (``[None]``: the whole tensor at once)."""
    if not recipe.method.rowwise or len(shape) < 2:
        return [None]
    step = max(1, CHUNK_ELEMENTS // math.prod(shape[1:]))
    if step >= shape[0]:
        return [None]
    return [(start, min(start + step, shape[0])) for start in range(0, shape[0], step)]


def _run(recipe: Recipe, readers: dict[Path, ModelReader], job: Job, call: _Call,
         seed: int) -> Iterator[torch.Tensor]:
    """The merged tensor, in row blocks for rowwise methods (loading only those rows)."""
    generators = [torch.Generator().manual_seed(tensor_seed(seed, job.name, i)) for i in call.models]
    for rows in row_blocks(recipe, job.shape):
        tensors = []
        for src, inp in zip(job.slice.sources, job.inputs):
            x = readers[src.path].load(inp, rows)
            if recipe.dtype:
                x = x.to(DTYPES[recipe.dtype])
            tensors.append(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x)
        inputs = MergeInputs(
            base=tensors[call.base] if call.base is not None else None,
            models=[tensors[i] for i in call.models],
            model_params=list(call.model_params),
            params=call.params,
            generators=generators,
        )
        yield recipe.method.merge(inputs).to(job.dtype)


def _write_config(recipe: Recipe, readers: dict[Path, ModelReader], jobs: list[Job],
                  out: Path) -> None:
    config = dict(readers[recipe.config_path()].config)
    sources = [(s, s.layer_range[0] + i) for sl in recipe.slices for i in range(sl.num_layers)
               for s in sl.sources[:1]]
    config["num_hidden_layers"] = len(sources)
    if isinstance(config.get("layer_types"), list):  # per-layer attention types follow their layer
        config["layer_types"] = [readers[s.path].config["layer_types"][i] for s, i in sources]
    name = dtype_name(jobs[0].dtype) if jobs else None
    for key in ("dtype", "torch_dtype"):
        if key in config and name:
            config[key] = name
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def model_card(recipe: Recipe, raw: dict[str, Any], seed: int, title: str) -> dict[str, Any]:
    """The model card: what the model is, its parents and the recipe that replays it."""
    written = ([recipe.raw["base_model"]] if recipe.raw.get("base_model") else []) + [
        src.model for sl in recipe.slices for src in sl.sources]
    parents = list(dict.fromkeys(written))
    layers = sum(sl.num_layers for sl in recipe.slices)
    replay = "forge merge recipe.yaml OUT_DIR" + (f" --seed {seed}" if recipe.method.stochastic else "")
    return {
        "name": title,
        "description": f"Merged by Forge with `{recipe.method.name}` ({recipe.method.paper}), {layers} layers, "
                       f"merge seed {seed}. Replay with `{replay}` from the directory this merge ran in "
                       "(model paths are relative to it, as in mergekit).",
        "tags": ["merge", "forge", "mergekit"],
        "base_model": parents,
        "parents": parents,
        "merge": {"method": recipe.method.name, "base": recipe.raw.get("base_model"), "layers": layers, "seed": seed},
        "recipe": raw,
    }
