"""Singular-value fine-tuning (SVF), the expert vectors of Transformer² (Sun et al. 2025,
arXiv 2501.06252; reference code SakanaAI/self-adaptive-llms).

Each adapted weight is decomposed once, ``W = U diag(s) Vh``. An expert is one vector ``z`` per
weight (as long as ``s``) that rescales the singular values::

    m  = sigmoid(z) * max_mult
    W' = U diag(s * m) Vh * (sum s / sum(s * m))

The last factor keeps the nuclear norm of ``W'`` equal to that of ``W``, so any uniform ``m``
gives ``W' = W`` exactly: ``z = 0`` (:func:`init_expert`) starts every expert at the input model.
The reference code starts at ``z = 0.1`` plus noise with ``max_mult = 1``; both are uniform
(noise aside) and so give ``W`` back. We keep ``z = 0`` with ``max_mult = 2`` by default, which
puts ``m = 1`` at the sigmoid's steepest point, as the issue asks. The same factor makes
``max_mult`` cancel: scaling every ``m`` by a constant leaves ``W'`` unchanged, so only the ratios
``sigmoid(z_i) / sigmoid(z_j)`` matter (``tests/specialize`` checks this).

Adapted weights: the attention projections and the MLP matrices of every decoder layer
(:data:`ADAPTED`); never embeddings, ``lm_head`` or norms. The reference code adapts the MLP
only; the issue asks for attention as well, and the LoRA baseline targets the same matrices.

Pure tensor functions live here; :func:`svf_applied` (write adapted weights into a model and put
the originals back) and :func:`svf_forward` (a differentiable forward through ``W'``, via
``torch.func.functional_call``, the model's own parameters untouched) are the two ways a model
uses an expert.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor

from forgelib.errors import ForgeError

ADAPTED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Linear layers whose weight gets a z vector: attention q/k/v/o and MLP gate/up/down."""

Expert = dict[str, Tensor]
"""Weight name -> z vector (length = that weight's number of singular values)."""


class Factors(NamedTuple):
    """Thin SVD of one weight: ``W = U @ diag(s) @ Vh``; U (out, r), s (r,), Vh (r, in)."""

    U: Tensor
    s: Tensor
    Vh: Tensor


def adapted_weight_names(model) -> list[str]:
    """Parameter names of the 2-D weights SVF adapts, in model order."""
    names = [f"{module_name}.weight" for module_name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module_name.rsplit(".", 1)[-1] in ADAPTED]
    if not names:
        raise ForgeError(f"{type(model).__name__}: no Linear layer named one of {', '.join(ADAPTED)}; "
                         "SVF needs a Llama-style decoder")
    return names


def compute_svd(model) -> dict[str, Factors]:
    """Thin SVD of every adapted weight, computed in float64 and stored in float32."""
    params = dict(model.named_parameters())
    svd = {}
    for name in adapted_weight_names(model):
        U, s, Vh = torch.linalg.svd(params[name].detach().double(), full_matrices=False)
        svd[name] = Factors(U.float().contiguous(), s.float().contiguous(), Vh.float().contiguous())
    return svd


def weights_fingerprint(model) -> str:
    """sha256 of the adapted weights' names and bytes: the SVD cache is valid while it is unchanged."""
    digest = hashlib.sha256()
    params = dict(model.named_parameters())
    for name in adapted_weight_names(model):
        tensor = params[name].detach().float().contiguous()
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def save_svd(svd: Mapping[str, Factors], path: str | Path) -> None:
    """Write the factors to one safetensors file (via a temporary sibling and a rename)."""
    import os

    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tensors = {f"{name}.{part}": getattr(f, part) for name, f in svd.items() for part in Factors._fields}
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def load_svd(path: str | Path, names: Sequence[str] | None = None) -> dict[str, Factors]:
    """The factors :func:`save_svd` wrote, keyed in the order of ``names`` (default: sorted).

    Pass the model's :func:`adapted_weight_names`: the key order is the order experts are stored
    and summed in (gradient clipping's total norm, for one), so a cached SVD must iterate like a
    fresh :func:`compute_svd` for training to give the same bytes."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    stored = {key.rsplit(".", 1)[0] for key in tensors}
    names = sorted(stored) if names is None else list(names)
    if set(names) != stored:
        raise ForgeError(f"{path}: SVD cache holds other weights than the model's; delete it to recompute")
    try:
        return {name: Factors(*(tensors[f"{name}.{part}"] for part in Factors._fields)) for name in names}
    except KeyError as exc:
        raise ForgeError(f"{path}: SVD cache lacks {exc.args[0]}; delete it to recompute") from None


def multiplier(z: Tensor, max_mult: float) -> Tensor:
    """``m = sigmoid(z) * max_mult``: the per-singular-value scale, in (0, max_mult)."""
    return torch.sigmoid(z) * max_mult


def adapt_weight(factors: Factors, z: Tensor, max_mult: float) -> Tensor:
    """``W' = U diag(s * m) Vh * (sum s / sum(s * m))`` for one weight (differentiable in z)."""
    U, s, Vh = factors
    scaled = s * multiplier(z, max_mult)  # (r,)
    return (U * scaled) @ Vh * (s.sum() / scaled.sum())


def adapted_weights(svd: Mapping[str, Factors], expert: Expert, max_mult: float) -> dict[str, Tensor]:
    return {name: adapt_weight(svd[name], expert[name], max_mult) for name in svd}


def init_expert(svd: Mapping[str, Factors]) -> Expert:
    """z = 0 for every weight: uniform m, so ``W' == W`` (up to float rounding)."""
    return {name: torch.zeros_like(f.s) for name, f in svd.items()}


def mix(experts: Sequence[Expert], coefficients: Sequence[float]) -> Expert:
    """``z' = sum_k a_k z_k`` (Transformer²'s few-shot adaptation; a linear map of the z's).

    The reference code combines the multipliers ``m_k`` rather than the ``z_k``; we follow the
    paper's equation, which mixes the expert vectors themselves."""
    if len(experts) != len(coefficients) or not experts:
        raise ForgeError(f"mixing needs one coefficient per expert, got {len(coefficients)} for {len(experts)}")
    return {name: sum(float(a) * e[name] for a, e in zip(coefficients, experts)) for name in experts[0]}


def svf_param_count(svd: Mapping[str, Factors]) -> int:
    """Trainable parameters of one expert: one per singular value of every adapted weight."""
    return sum(int(f.s.numel()) for f in svd.values())


def lora_param_count(svd: Mapping[str, Factors], rank: int) -> int:
    """Trainable parameters of a rank-``rank`` LoRA on the same weights: ``r * (in + out)`` each."""
    return sum(rank * (f.U.shape[0] + f.Vh.shape[1]) for f in svd.values())


@contextlib.contextmanager
def svf_applied(model, svd: Mapping[str, Factors], expert: Expert | None, max_mult: float) -> Iterator:
    """Within the block the model's adapted weights are ``W'`` of ``expert`` (None: unchanged);
    the original tensors are copied back afterwards, bit for bit, even on error."""
    if expert is None:
        yield model
        return
    params = dict(model.named_parameters())
    originals = {name: params[name].detach().clone() for name in svd}
    try:
        with torch.no_grad():
            for name, weight in adapted_weights(svd, expert, max_mult).items():
                params[name].copy_(weight)
        yield model
    finally:
        with torch.no_grad():
            for name, weight in originals.items():
                params[name].copy_(weight)


def svf_forward(model, svd: Mapping[str, Factors], expert: Expert, max_mult: float, **inputs):
    """The model's output with ``W'`` in place of the adapted weights; gradients reach ``expert``."""
    return torch.func.functional_call(model, adapted_weights(svd, expert, max_mult), args=(), kwargs=inputs,
                                      strict=False)
