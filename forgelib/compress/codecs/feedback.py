"""GPTQ's error feedback, shared by the codecs that quantize a weight column by column.

Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", arXiv 2210.17323. Columns of W (out, in) are quantized left to right; each
column's error, divided by the diagonal of the upper Cholesky factor of H^-1, is fed back into
the columns not yet quantized, so they absorb it (H = X^T X of the layer's calibration inputs).
Feedback within a block of columns is applied at once; across blocks it is batched ("lazy batch
updates"), as in the paper. Without a Hessian (H = I) the feedback is zero and every column is
simply rounded.

The codec supplies how one column is quantized: ``quantize(j, col, block)`` gets the column
index ``j``, the column ``col`` (out,) with the feedback so far, and ``block``, the working
columns ``j ..`` of the current block (GPTQ with groups reads a group's range there before
quantizing its first column); it returns the quantized column.
"""

from __future__ import annotations

from typing import Callable

import torch

from forgelib.errors import ForgeError

Quantize = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def prepare(W: torch.Tensor, hessian: torch.Tensor | None, *, what: str) -> torch.Tensor:
    """The Hessian to use (a float copy; identity without one). Inputs that never fire
    (H_jj <= 0) cannot matter: their weights are zeroed in ``W`` (in place) and H_jj set to 1."""
    in_f = W.shape[1]
    H = torch.eye(in_f) if hessian is None else hessian.detach().float().clone()
    if H.shape != (in_f, in_f):
        raise ForgeError(f"{what}: Hessian shape {list(H.shape)} does not match input dim {in_f}")
    dead = H.diagonal() <= 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    return H


def inverse_cholesky(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1 (``H`` is damped in place)."""
    H += damp * H.diagonal().mean() * torch.eye(H.shape[0])
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H.double())), upper=True).float()


def quantize_columns(W: torch.Tensor, Hinv: torch.Tensor, block_size: int, quantize: Quantize) -> None:
    """Quantize ``W``'s columns in order with error feedback (``W`` is consumed: updated in place)."""
    in_f = W.shape[1]
    for i1 in range(0, in_f, block_size):
        i2 = min(i1 + block_size, in_f)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for j in range(i2 - i1):
            col = W1[:, j]
            q = quantize(i1 + j, col, W1[:, j:])
            err = (col - q) / Hinv1[j, j]
            W1[:, j:] -= err[:, None] * Hinv1[j, j:][None, :]
            Err1[:, j] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
