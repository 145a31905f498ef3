"""params.yaml, typed: the section registry and the loader.

Each top-level section (same names as the stages) is one frozen dataclass that lives next to the
subsystem it configures, with a help text per field and its checks in ``__post_init__``
(:mod:`forgelib.configtools`). This module only knows where each one is: :data:`SECTIONS` names
it as ``"module:Class"`` and :func:`section_class` imports it on first use. So ``load_section
("train")`` imports ``forgelib.train.config`` and no other section's code, and a stage depends
(for DVC) on its own section's config module only; ``load_params`` imports all of them (for
``forge validate`` and the ``validate`` stage).

Unknown sections and keys, wrong types and out-of-range values fail with the file and the dotted
key, e.g. ``params.yaml: train.grokfast.alpha: expected a float in (0, 1), got 1.5``, and
``forge validate`` exits 2.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from forgelib.configtools import from_dict
from forgelib.errors import ForgeError

SECTIONS: dict[str, str] = {
    "prepare": "forgelib.data.config:PrepareConfig",
    "base": "forgelib.base.config:BaseConfig",
    "evomerge": "forgelib.merge.config:EvoMergeConfig",
    "quietstar": "forgelib.quietstar.config:QuietStarConfig",
    "train": "forgelib.train.config:TrainConfig",
    "specialize": "forgelib.specialize.config:SpecializeConfig",
    "agents": "forgelib.agents.config:AgentsConfig",
    "compress": "forgelib.compress.config:CompressConfig",
    "deploy": "forgelib.export.config:DeployConfig",
    "humaneval": "forgelib.eval.config:HumanEvalConfig",
    "report": "forgelib.report_config:ReportConfig",
    "gates": "forgelib.report_config:GatesConfig",
}
"""Section name -> ``"module:Class"`` of its dataclass, in params.yaml order. A string, not the
class: importing this registry imports no section's code."""


def section_class(name: str) -> type:
    """The dataclass of section ``name``, imported now (and only its module)."""
    if name not in SECTIONS:
        raise ForgeError(f"unknown section {name!r}; valid sections: {', '.join(SECTIONS)}")
    module, cls = SECTIONS[name].split(":")
    return getattr(importlib.import_module(module), cls)


@dataclass(frozen=True)
class Params:
    """The whole params.yaml, validated: ``params.train`` is the ``train`` section's dataclass."""

    sections: dict = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.sections[name]
        except KeyError:
            raise AttributeError(name) from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ForgeError(f"{path}: params file not found; run from the project root or pass --params")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ForgeError(f"{path}: malformed YAML ({exc}); fix the syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ForgeError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def _check_sections(data: dict, source: str) -> None:
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ForgeError(f"{source}: {unknown[0]}: unknown section; valid sections: {', '.join(SECTIONS)}")


def parse_section(data: dict, name: str, source: str = "params.yaml"):
    """Section ``name`` of the parsed file ``data`` (an absent section takes every default)."""
    _check_sections(data, source)
    try:
        return from_dict(section_class(name), data.get(name), name)
    except ForgeError as exc:
        raise ForgeError(f"{source}: {exc}") from None


def parse_params(data: dict, source: str = "params.yaml") -> Params:
    """Validate every section (what ``forge validate`` runs)."""
    _check_sections(data, source)
    return Params({name: parse_section(data, name, source) for name in SECTIONS})


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_yaml(path), str(path))


def load_section(name: str, path: str | Path = "params.yaml"):
    """One validated section (plus a check that every top-level section name is known)."""
    return parse_section(read_yaml(path), name, str(path))
