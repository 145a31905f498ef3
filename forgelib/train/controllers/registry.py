"""The explicit registry of Forge-loop controllers and how each is built from ``TrainConfig``.

The list order is the hook order within a step: the temperature is set before a dream samples,
the curriculum picks levels before the batch is drawn, Grokfast filters before anything reads
the gradients, and the λ scheduler acts on the Grokfast controller built before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from forgelib.errors import ForgeError
from forgelib.train.config import TrainConfig
from forgelib.train.controllers.base import Controller
from forgelib.train.controllers.dream import DreamCycles
from forgelib.train.controllers.edge import EdgeCurriculum
from forgelib.train.controllers.geometry import GeometryProbe
from forgelib.train.controllers.grokfast import GrokfastController
from forgelib.train.controllers.lamb_scheduler import LambScheduler
from forgelib.train.controllers.self_model import SelfModelHead
from forgelib.train.controllers.temperature import TemperatureCurriculum


@dataclass(frozen=True)
class BuildEnv:
    """What builders may read besides the config."""

    model: Any
    tasks: Mapping
    stream: Any
    max_new_tokens: int


def _hidden_index(key: str, index: int, model) -> int:
    count = model.config.num_hidden_layers + 1  # hidden_states: embeddings, then one per layer
    if not -count <= index < count:
        raise ForgeError(f"{key}: expected a hidden-state index in [{-count}, {count - 1}] for this "
                         f"{count - 1}-layer model, got {index}")
    return index % count


def _temperature(cfg: TrainConfig, env: BuildEnv) -> Controller | None:
    t = cfg.temperature
    return TemperatureCurriculum(start=t.start, end=t.end, ramp_steps=t.ramp_steps or cfg.max_steps) if t.enabled else None


def _edge(cfg: TrainConfig, env: BuildEnv) -> Controller | None:
    e = cfg.edge
    if not e.enabled:
        return None
    ranges = {fam: env.stream.level_range(fam) for fam in env.stream.families()}
    if all(lo == hi for lo, hi in ranges.values()):
        raise ForgeError("train.edge: every family has a single difficulty level in the train split, so the "
                         "curriculum cannot move; set train.source to generate (or auto)")
    return EdgeCurriculum(level_ranges=ranges, band=e.band, window=e.window, min_samples=e.min_samples,
                          update_every=e.update_every, start_level=e.start_level)


def _grokfast(cfg: TrainConfig, env: BuildEnv) -> Controller | None:
    g = cfg.grokfast
    return GrokfastController(filter=g.filter, alpha=g.alpha, lamb=g.effective_lamb(), window_size=g.window_size,
                              warmup=g.warmup) if g.enabled else None


def _lamb_schedule(cfg: TrainConfig, env: BuildEnv) -> Controller | None:
    s = cfg.grokfast.schedule
    if not (cfg.grokfast.enabled and s.enabled):
        return None
    return LambScheduler(gap_high=s.gap_high, gap_low=s.gap_low, factor=s.factor, lamb_min=s.lamb_min,
                         lamb_max=s.lamb_max)


def _self_model(cfg: TrainConfig, env: BuildEnv) -> Controller | None:
    s = cfg.self_model
    if not s.enabled:
        return None
    target = s.target_layer if s.target_layer is not None else env.model.config.num_hidden_layers // 2
    head = SelfModelHead(hidden_size=env.model.config.hidden_size, weight=s.weight, seed=cfg.seed,
                         source_layer=_hidden_index("train.self_model.source_layer", s.source_layer, env.model),
                         target_layer=_hidden_index("train.self_model.target_layer", target, env.model))
    head.head.to(next(env.model.parameters()).device)
    return head


def _geometry(cfg: TrainConfig, env: BuildEnv) -> Controller | None:
    g = cfg.geometry
    if not g.enabled:
        return None
    tasks = sorted(env.tasks.items())
    if g.family is not None:
        from forgelib.data.tasks import get_task

        families = sorted({get_task(name).family for name, _ in tasks})
        if g.family not in families:
            raise ForgeError(f"train.geometry.family: {g.family!r} is not the family of any prepared task "
                             f"(families here: {', '.join(families)}); set one of them or null")
        tasks = [(name, splits) for name, splits in tasks if get_task(name).family == g.family]
    per_task = [list(splits["validation"]["prompt"]) for _, splits in tasks]
    interleaved = [p for group in zip(*per_task) for p in group] if per_task else []
    prompts = list(dict.fromkeys(interleaved))[: g.probe_size]
    if len(prompts) < 8:
        raise ForgeError(f"train.geometry: the validation splits give {len(prompts)} distinct prompts; "
                         "the probe needs at least 8")
    layers = [_hidden_index("train.geometry.layers", i, env.model) for i in g.layers]
    return GeometryProbe(probe_prompts=prompts, layers=layers, every=g.every, trend_window=g.trend_window,
                         hidden_size=env.model.config.hidden_size, family=g.family)


def _dreams(cfg: TrainConfig, env: BuildEnv) -> Controller | None:
    d = cfg.dreams
    return DreamCycles(every=d.every, steps=d.steps, buffer_size=d.buffer_size, batch_size=cfg.batch_size,
                       self_fraction=d.self_fraction, self_prompts=d.self_prompts, temperature=d.temperature,
                       max_new_tokens=env.max_new_tokens, seed=cfg.seed) if d.enabled else None


CONTROLLERS: list[tuple[str, Callable[[TrainConfig, BuildEnv], Controller | None]]] = [
    ("temperature", _temperature),
    ("edge", _edge),
    ("grokfast", _grokfast),
    ("lamb_schedule", _lamb_schedule),
    ("self_model", _self_model),
    ("geometry", _geometry),
    ("dreams", _dreams),
]
REGISTRY = dict(CONTROLLERS)


def get_builder(name: str) -> Callable[[TrainConfig, BuildEnv], Controller | None]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ForgeError(f"unknown controller {name!r}; valid controllers: {', '.join(REGISTRY)}") from None


def build_controllers(cfg: TrainConfig, env: BuildEnv) -> list[Controller]:
    """The enabled controllers, in hook order."""
    built = (builder(cfg, env) for _, builder in CONTROLLERS)
    return [c for c in built if c is not None]
