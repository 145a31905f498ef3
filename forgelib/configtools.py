"""Building frozen config dataclasses from YAML dicts, with errors that name the key.

``from_dict(cls, data, path)`` walks the dataclass's type hints: nested dataclasses, lists,
dicts, ``X | None`` and the scalar types. Unknown keys, wrong types and failed range checks all
raise :class:`ForgeError` with the dotted key, e.g.
``params.yaml: train.grokfast.alpha: expected a float in (0, 1), got 1.5``.

Range checks live in each dataclass's ``__post_init__`` and call :func:`check`, which raises a
:class:`FieldError` carrying only the field name; ``from_dict`` prefixes the section path. Help
text lives in each field (:func:`doc`); :func:`field_docs` lists it for ``forge validate --explain``.

A type whose YAML form is not one key per field (a codec choice ``{codec: vptq, v: 4}``, whose
settings depend on the codec) defines two hooks instead: ``from_params(cls, value, path)``
builds it (errors name ``path``) and ``to_params(self)`` returns the plain form. ``from_dict``,
``to_dict`` and ``field_docs`` (which lists such a type as one key) use them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from forgelib.errors import ForgeError


class FieldError(ForgeError):
    """A failed check on one field; ``from_dict`` adds the dotted path in front of the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def check(ok: bool, field: str, expected: str, got: Any) -> None:
    """Raise ``FieldError(field, "expected <expected>, got <got>")`` unless ``ok``."""
    if not ok:
        raise FieldError(field, f"expected {expected}, got {got!r}")


def doc(text: str, **kwargs) -> dataclasses.Field:
    """A dataclass field with a docstring kept in ``metadata['doc']`` (used by ``--help``/README)."""
    return dataclasses.field(metadata={"doc": text}, **kwargs)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(tp, value, path: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, path)
            except ForgeError as exc:
                errors.append(str(exc))
        raise ForgeError(errors[0] if len(errors) == 1 else f"{path}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if isinstance(tp, type) and hasattr(tp, "from_params"):
        return tp.from_params(value, path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ForgeError(f"{path}: expected a mapping, got {value!r}")
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ForgeError(f"{path}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_convert(item_type, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ForgeError(f"{path}: expected a mapping, got {value!r}")
        key_type, val_type = args or (Any, Any)
        return {str(k): _convert(val_type, v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ForgeError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ForgeError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ForgeError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ForgeError(f"{path}: expected a string, got {value!r}")
        return value
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ForgeError(f"{path}: expected one of {', '.join(map(str, args))}, got {value!r}")
        return value
    return value


def from_dict(cls, data: dict | None, path: str):
    """Build dataclass ``cls`` from ``data``; every error names ``path.<key>``."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ForgeError(f"{path}.{unknown[0]}: unknown key; valid keys of {path}: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{path}.{name}")
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ForgeError(f"{path}.{missing[0]}: required key is missing")
    try:
        return cls(**kwargs)
    except FieldError as exc:
        raise ForgeError(f"{path}.{exc.field}: {exc.message}") from None


def replace(obj, path: str, **changes):
    """``dataclasses.replace`` for overrides (CLI flags): a failed check names ``path.<field>``."""
    try:
        return dataclasses.replace(obj, **changes)
    except FieldError as exc:
        raise ForgeError(f"{path}.{exc.field}: {exc.message}") from None


def to_dict(obj) -> Any:
    """The inverse of ``from_dict``: plain YAML-able values."""
    if hasattr(obj, "to_params"):
        return obj.to_params()
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def field_docs(cls, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, Any]]:
    """(dotted key, doc, default) for every field, recursively: the params reference.

    ``defaults``: an instance whose values are the defaults (a nested section's default is its
    parent's ``default_factory`` result, e.g. ``base.specialist.steps`` is 600, not 1000)."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if defaults is not None:
            default = getattr(defaults, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        rows.append((key, f.metadata.get("doc", ""), to_dict(default)))
        if dataclasses.is_dataclass(hints[f.name]) and not hasattr(hints[f.name], "from_params"):
            rows += field_docs(hints[f.name], key + ".", default if dataclasses.is_dataclass(default) else None)
    return rows
