"""Data-flow-space (DFS) merging (Akiba et al., "Evolutionary Optimization of Model Merging
Recipes", arXiv 2403.13187, section 3.2), written as a plain mergekit passthrough recipe.

The paper lays the layers of ``M`` models out in one sequence, all layers of model 0, then of
model 1, ..., repeated ``r`` times (``T = r * M * L`` slots). A genome is an indicator per slot
(does the token's path run through this layer?) plus a scale for the hidden state entering each
kept layer. The path is the kept slots in order; the merged model is that stack of layers.

Scaling, and our one deviation: the paper multiplies a layer's *input* by ``W[i, j]`` (a matrix
indexed by the previous and the current layer; once the path is fixed it is one scalar per
slot). A plain Hugging Face Llama has nowhere to store that, so we put the scale on the layer's
residual-branch outputs instead: ``o_proj`` and ``down_proj`` times ``s_j``, expressed as
mergekit's passthrough ``scale`` parameter filtered to those tensors. In a pre-norm RMSNorm
network this is an exact reparametrization for positive scales (up to the norm's epsilon):
scaling the residual stream by ``w_j`` before layer ``j`` leaves every later RMSNorm input
direction unchanged, so it equals dividing the branch outputs of layer ``j`` and of every layer
after it by ``w_j``, i.e. branch scales ``s_j = prod_{i <= j} 1 / w_i``. The two families of
models coincide; only the coordinates differ. Scales must therefore stay positive.

The embeddings come from the first kept slot's model and the final norm and ``lm_head`` from the
last one, as mergekit's passthrough does for any frankenmerge.
"""

from __future__ import annotations

from typing import Sequence

from forgelib.errors import ForgeError

BRANCH_OUTPUTS = ("self_attn.o_proj", "mlp.down_proj")


def candidate_slots(n_models: int, n_layers: int, repeats: int) -> list[tuple[int, int]]:
    """The paper's layer sequence as ``(model, layer)`` pairs, ``repeats * n_models * n_layers`` long."""
    return [(m, layer) for _ in range(repeats) for m in range(n_models)
            for layer in range(n_layers)]


def dfs_recipe(
    models: Sequence[str],
    n_layers: int,
    include: Sequence[bool],
    scale: Sequence[float],
    *,
    repeats: int,
    dtype: str = "float32",
) -> dict:
    """A mergekit passthrough recipe running the kept slots in order, one slice per slot."""
    slots = candidate_slots(len(models), n_layers, repeats)
    if len(include) != len(slots) or len(scale) != len(slots):
        raise ForgeError(f"dfs: expected {len(slots)} include flags and scales "
                         f"(repeats {repeats} x {len(models)} models x {n_layers} layers), "
                         f"got {len(include)} and {len(scale)}")
    slices = []
    for (model, layer), keep, s in zip(slots, include, scale):
        if not keep:
            continue
        if s <= 0:
            raise ForgeError(f"dfs: scales must be positive (the folding into o_proj/down_proj "
                             f"is exact only then), got {s}")
        source: dict = {"model": models[model], "layer_range": [layer, layer + 1]}
        if s != 1.0:
            source["parameters"] = {"scale": [{"filter": f, "value": s} for f in BRANCH_OUTPUTS]}
        slices.append({"sources": [source]})
    if not slices:
        raise ForgeError("dfs: the indicator keeps no layer; keep at least one slot")
    return {"merge_method": "passthrough", "slices": slices, "dtype": dtype}
