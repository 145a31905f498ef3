"""Quiet-STaR's mixing and training signal as pure tensor functions.

Zelikman et al. 2024, "Quiet-STaR: Language Models Can Teach Themselves to Think Before
Speaking" (arXiv 2403.09629), section 4:

- mixing (eq. 2 of the paper): the post-thought prediction is ``(1 - w) * base + w * thought``,
  ``w`` a scalar per position from the mixing head. The paper writes it with log-probabilities;
  this interpolates logits, as the reference code does in effect: it mixes the last hidden
  states before the LM head, which for a bias-free linear head gives the same logits. At
  ``w = 0`` they are exactly the base model's. Like the reference code, ``w`` is not bounded
  (a negative ``w`` pushes the prediction away from the thought's).
- reward (eq. 3): the log-likelihood of the next ``lookahead`` true tokens under the mixed
  prediction minus the same without the thought (the paper subtracts the mean over thoughts,
  which :func:`reinforce_advantage` does; the without-thought term is the same for every thought
  of a position, so it only centres the logged reward);
- REINFORCE (eq. 4): ``-advantage * log p(thought)``, the advantage being the reward minus the
  mean reward of the thoughts sampled for the same position. The reference code also clamps
  negative advantages to 0; this follows the paper and keeps them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mix_logits(base: Tensor, thought: Tensor, weight: Tensor) -> Tensor:
    """``(1 - weight) * base + weight * thought``; weight (..., 1) broadcasts over the vocabulary."""
    return (1 - weight) * base + weight * thought


def token_nll(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """(N, A) NLL of each target token under ``logits`` (N, A, V); 0 where ``mask`` is 0."""
    nll = F.cross_entropy(logits.transpose(1, 2).float(), targets.clamp(min=0), reduction="none")
    return nll * mask


def thought_reward(base_nll: Tensor, mixed_nll: Tensor, mask: Tensor, lookahead: int) -> Tensor:
    """(N,) log p_mixed - log p_base of the first ``lookahead`` true tokens of each row (nats)."""
    gain = (base_nll - mixed_nll) * mask
    return gain[:, :lookahead].sum(dim=1)


def reinforce_advantage(reward: Tensor, n_thoughts: int) -> Tensor:
    """Reward minus the mean reward of its group: rows ``k * n_thoughts ..`` share a position."""
    grouped = reward.view(-1, n_thoughts)
    return (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)


def reinforce_loss(advantage: Tensor, thought_logprob: Tensor) -> Tensor:
    """REINFORCE on the thought tokens: ``mean(-advantage * log p(thought))`` (advantage detached)."""
    return -(advantage.detach() * thought_logprob).mean()
