"""What a merge method is: a pure tensor function plus the mergekit parameters it reads.

mergekit splits parameters in two kinds, and so do we: *global* parameters (``normalize``,
``lambda``, ``t``) are read from the slice or top-level ``parameters`` of a recipe, *model*
parameters (``weight``, ``density``, ``gamma``, ``epsilon``, ``scale``) are read per input model,
falling back to the slice and then the top-level ``parameters``. The engine resolves both for
every tensor (gradients and filters included) and hands the method one :class:`MergeInputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch

REQUIRED: Any = object()
"""Default of a parameter a recipe must set (mergekit's ``required=True``)."""


@dataclass(frozen=True)
class Param:
    """One recipe parameter: its mergekit name, its type and its default."""

    name: str
    kind: type  # float or bool: values are checked after gradients/filters are evaluated
    default: Any = REQUIRED


@dataclass
class MergeInputs:
    """The tensors and resolved parameters of one output tensor.

    ``base`` is the base model's tensor for methods that use one (None otherwise) and ``models``
    are the other inputs, in recipe order, with ``model_params[i]`` their parameters and
    ``generators[i]`` their random stream (seeded per tensor and model by the engine; consumed
    in order, so merging a tensor in row blocks draws exactly the numbers of one whole pass).
    """

    base: torch.Tensor | None
    models: list[torch.Tensor]
    model_params: list[dict[str, Any]]
    params: dict[str, Any]
    generators: list[torch.Generator] = field(default_factory=list)

    def per_model(self, name: str) -> list[Any]:
        return [p[name] for p in self.model_params]


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method (mergekit name, paper, parameters, and the function to call)."""

    name: str
    paper: str
    merge: Callable[[MergeInputs], torch.Tensor]
    global_params: tuple[Param, ...] = ()
    model_params: tuple[Param, ...] = ()
    base: Literal["required", "optional", "none"] = "none"
    stochastic: bool = False  # draws from MergeInputs.generators
    # Output row i depends only on input rows i, so the engine may merge a large tensor in row
    # blocks (bounded memory). False for methods with a whole-tensor statistic (top-k
    # thresholds, norms, angles).
    rowwise: bool = False
    min_models: int = 1  # inputs besides the base model
    max_models: int | None = None

    def param(self, name: str) -> Param | None:
        for p in self.global_params + self.model_params:
            if p.name == name:
                return p
        return None

    def is_global(self, name: str) -> bool:
        return any(p.name == name for p in self.global_params)
