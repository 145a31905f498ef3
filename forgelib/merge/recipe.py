"""Merge recipes: mergekit-compatible YAML, parsed strictly.

Supported keys (mergekit's meaning): ``merge_method``, ``base_model``, ``models: [{model,
parameters}]``, ``slices: [{sources: [{model, layer_range, parameters}], parameters,
base_model}]``, ``parameters``, ``dtype``, ``out_dtype`` and ``tokenizer_source`` (``base`` or a
model path). Anything else is a ForgeError naming the key: a recipe is never half-applied.

Model paths resolve against the current working directory, as in mergekit; Forge merges local
Hugging Face directories only (no hub download, no LoRA ``model+adapter`` references).

``models:`` is normalized into one slice spanning every layer (the base model is appended when it
is not listed), exactly as mergekit's planner does, so the engine only deals with slices.

Parameter values may be scalars, gradients (a list of numbers, interpolated linearly over the
layers of a slice) or filtered conditionals (``[{filter: self_attn, value: 0.3}, {value: 0.5}]``,
first matching substring wins); :func:`evaluate_setting` implements mergekit's rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgelib.errors import ForgeError
from forgelib.merge.methods.base import MergeMethod
from forgelib.merge.methods.registry import get_method
from forgelib.models.dtypes import DTYPES

TOP_KEYS = {"merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype",
            "tokenizer_source"}
MODEL_KEYS = {"model", "parameters"}
SLICE_KEYS = {"sources", "parameters", "base_model"}
SOURCE_KEYS = {"model", "layer_range", "parameters"}


@dataclass(frozen=True)
class Source:
    """One input of a slice: a model directory and the layers ``[start, stop)`` it contributes."""

    model: str  # as written in the recipe
    path: Path  # resolved against the working directory
    layer_range: tuple[int, int]
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Slice:
    sources: tuple[Source, ...]
    parameters: dict[str, Any]
    base_path: Path | None

    @property
    def num_layers(self) -> int:
        start, stop = self.sources[0].layer_range
        return stop - start


@dataclass(frozen=True)
class Recipe:
    method: MergeMethod
    base_path: Path | None
    slices: tuple[Slice, ...]
    parameters: dict[str, Any]
    dtype: str | None
    out_dtype: str | None
    tokenizer_path: Path | None
    raw: dict[str, Any]

    def model_paths(self) -> list[Path]:
        """Every referenced model, base first, each once, in recipe order."""
        paths = [self.base_path] if self.base_path else []
        for s in self.slices:
            paths += [src.path for src in s.sources] + ([s.base_path] if s.base_path else [])
        return list(dict.fromkeys(p for p in paths if p is not None))

    def config_path(self) -> Path:
        """Where config.json comes from: the base model, else the first source (as mergekit)."""
        return self.base_path or self.slices[0].sources[0].path


def evaluate_setting(setting: Any, tensor_name: str, t: float) -> Any:
    """A parameter's value for one tensor at relative depth ``t`` in [0, 1] (None: no match)."""
    if isinstance(setting, (bool, int, float, str)):
        return setting
    if all(isinstance(e, bool) or isinstance(e, str) for e in setting):
        return setting[int(t * (len(setting) - 1))]  # steps: bools and strings do not interpolate
    if all(isinstance(e, (int, float)) for e in setting):
        scaled = t * (len(setting) - 1)
        i0 = int(scaled)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * setting[i0] + frac * setting[i1]
    for cond in setting:
        flt = cond.get("filter")
        if flt is None or flt == "*" or flt in tensor_name:
            return evaluate_setting(cond["value"], tensor_name, t)
    return None


def load_recipe_yaml(config_path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(config_path)
    if not path.is_file():
        raise ForgeError(f"{path}: merge config not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ForgeError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ForgeError(f"{path}: expected a mapping with merge_method, models or slices")
    return raw


def parse_recipe(raw: dict[str, Any], *, where: str = "recipe") -> Recipe:
    """Validate a recipe dict and normalize it to slices; ForgeErrors name ``where`` and the key."""
    _check_keys(raw, TOP_KEYS, where)
    if "merge_method" not in raw:
        raise ForgeError(f"{where}: missing merge_method (one of the mergekit method names)")
    method = get_method(raw["merge_method"])
    if ("models" in raw) == ("slices" in raw):
        raise ForgeError(f"{where}: give exactly one of 'models' or 'slices'")
    base = _resolve(raw["base_model"], f"{where}: base_model") if raw.get("base_model") else None
    params = _check_params(raw.get("parameters") or {}, method, f"{where}: parameters", True)
    if "models" in raw:
        slices = (_slice_from_models(raw["models"], base, raw.get("base_model"), method, where),)
    else:
        entries = raw["slices"]
        if not isinstance(entries, list) or not entries:
            raise ForgeError(f"{where}: slices must be a non-empty list")
        slices = tuple(_parse_slice(s, method, f"{where}: slices[{i}]")
                       for i, s in enumerate(entries))
    for key in ("dtype", "out_dtype"):
        if raw.get(key) is not None and raw[key] not in DTYPES:
            raise ForgeError(f"{where}: {key}: expected one of {', '.join(DTYPES)}, "
                             f"got {raw[key]!r}")
    return Recipe(
        method=method,
        base_path=base,
        slices=slices,
        parameters=params,
        dtype=raw.get("dtype"),
        out_dtype=raw.get("out_dtype"),
        tokenizer_path=_tokenizer_source(raw.get("tokenizer_source"), base, where),
        raw=raw,
    )


def _check_keys(entry: Any, allowed: set[str], where: str) -> None:
    if not isinstance(entry, dict):
        raise ForgeError(f"{where}: expected a mapping, got {type(entry).__name__}")
    for key in entry:
        if key not in allowed:
            raise ForgeError(
                f"{where}: unsupported key {key!r} (Forge supports {', '.join(sorted(allowed))}); "
                "remove it or merge with mergekit itself"
            )


def _resolve(model: Any, where: str) -> Path:
    if not isinstance(model, str):
        raise ForgeError(f"{where}: expected a model directory path, got {model!r}")
    path = (Path.cwd() / model).resolve()
    if not (path / "config.json").is_file():
        raise ForgeError(
            f"{where}: {model!r} (resolved to {path}) is not a Hugging Face model directory with "
            "config.json; paths are relative to the current directory, as in mergekit"
        )
    return path


def _num_layers(path: Path) -> int:
    config = json.loads((path / "config.json").read_text())
    if "num_hidden_layers" not in config:
        raise ForgeError(f"{path}/config.json: no num_hidden_layers; cannot plan layer slices")
    return int(config["num_hidden_layers"])


def _check_setting(value: Any, where: str) -> None:
    if isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, list) and value:
        if all(isinstance(e, (bool, int, float, str)) for e in value):
            return
        if all(isinstance(e, dict) for e in value):
            for i, cond in enumerate(value):
                _check_keys(cond, {"filter", "value"}, f"{where}[{i}]")
                if "value" not in cond:
                    raise ForgeError(f"{where}[{i}]: a conditional parameter needs a 'value'")
                _check_setting(cond["value"], f"{where}[{i}].value")
            return
    raise ForgeError(
        f"{where}: expected a number, a list of numbers (gradient) or a list of "
        f"{{filter, value}} conditions, got {value!r}"
    )


def _check_params(params: Any, method: MergeMethod, where: str, allow_global: bool) -> dict:
    if not isinstance(params, dict):
        raise ForgeError(f"{where}: expected a mapping of parameter names to values")
    known = [p.name for p in method.global_params + method.model_params]
    for name, value in params.items():
        if name not in known:
            raise ForgeError(f"{where}: {method.name} has no parameter {name!r} "
                             f"(its parameters: {', '.join(known) or 'none'}); remove it")
        if not allow_global and method.is_global(name):
            raise ForgeError(
                f"{where}.{name}: {name!r} is a global parameter of {method.name}; "
                "set it under the top-level (or slice) parameters"
            )
        _check_setting(value, f"{where}.{name}")
    return dict(params)


def _slice_from_models(models: Any, base: Path | None, base_name: str | None,
                       method: MergeMethod, where: str) -> Slice:
    if not isinstance(models, list) or not models:
        raise ForgeError(f"{where}: models must be a non-empty list")
    sources = []
    for i, entry in enumerate(models):
        loc = f"{where}: models[{i}]"
        _check_keys(entry, MODEL_KEYS, loc)
        path = _resolve(entry.get("model"), f"{loc}.model")
        params = _check_params(entry.get("parameters") or {}, method, f"{loc}.parameters", False)
        sources.append(Source(entry["model"], path, (0, _num_layers(path)), params))
    if base is not None and all(s.path != base for s in sources):
        sources.append(Source(str(base_name), base, (0, _num_layers(base)), {}))
    _check_slice_lengths(sources, where)
    return Slice(tuple(sources), {}, None)


def _parse_slice(entry: Any, method: MergeMethod, where: str) -> Slice:
    _check_keys(entry, SLICE_KEYS, where)
    raw_sources = entry.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise ForgeError(f"{where}: sources must be a non-empty list")
    sources = []
    for i, src in enumerate(raw_sources):
        loc = f"{where}.sources[{i}]"
        _check_keys(src, SOURCE_KEYS, loc)
        path = _resolve(src.get("model"), f"{loc}.model")
        layers = _num_layers(path)
        rng = src.get("layer_range")
        if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(x, int) for x in rng)
                and 0 <= rng[0] < rng[1] <= layers):
            raise ForgeError(
                f"{loc}.layer_range: expected [start, stop] with 0 <= start < stop <= {layers} "
                f"(layers of {src['model']}), got {rng!r}"
            )
        params = _check_params(src.get("parameters") or {}, method, f"{loc}.parameters", False)
        sources.append(Source(src["model"], path, (rng[0], rng[1]), params))
    _check_slice_lengths(sources, where)
    base = _resolve(entry["base_model"], f"{where}.base_model") if entry.get("base_model") else None
    params = _check_params(entry.get("parameters") or {}, method, f"{where}.parameters", True)
    return Slice(tuple(sources), params, base)


def _check_slice_lengths(sources: list[Source], where: str) -> None:
    lengths = {s.model: s.layer_range[1] - s.layer_range[0] for s in sources}
    if len(set(lengths.values())) > 1:
        raise ForgeError(f"{where}: every source of a slice needs the same number of layers, "
                         f"got {lengths}")


def _tokenizer_source(value: Any, base: Path | None, where: str) -> Path | None:
    if value is None:
        return None
    if value == "base":
        if base is None:
            raise ForgeError(f"{where}: tokenizer_source: base needs a base_model")
        return base
    if value == "union":
        raise ForgeError(
            f"{where}: tokenizer_source: union (vocabulary merging) is not supported; Forge merges "
            "models that share a vocabulary. Use 'base' or a model path"
        )
    return _resolve(value, f"{where}: tokenizer_source")
