"""The merge methods Forge knows, by mergekit name: an explicit list turned into a dict."""

from __future__ import annotations

from forgelib.errors import ForgeError
from forgelib.merge.methods import (
    breadcrumbs,
    dare,
    della,
    linear,
    model_stock,
    multislerp,
    passthrough,
    slerp,
    task_arithmetic,
    ties,
)
from forgelib.merge.methods.base import MergeMethod

METHODS: list[MergeMethod] = [
    linear.METHOD,
    slerp.METHOD,
    multislerp.METHOD,
    task_arithmetic.METHOD,
    ties.METHOD,
    dare.DARE_TIES,
    dare.DARE_LINEAR,
    breadcrumbs.BREADCRUMBS,
    breadcrumbs.BREADCRUMBS_TIES,
    della.DELLA,
    della.DELLA_LINEAR,
    model_stock.METHOD,
    passthrough.METHOD,
]

REGISTRY: dict[str, MergeMethod] = {m.name: m for m in METHODS}


def get_method(name: str) -> MergeMethod:
    """The method called ``name``; an unknown name is a ForgeError listing the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        valid = ", ".join(sorted(REGISTRY))
        raise ForgeError(f"merge_method: unknown method {name!r}; valid: {valid}") from None
