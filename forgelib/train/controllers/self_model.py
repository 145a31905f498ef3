"""Self-model head: the network also predicts its own hidden activations (arXiv 2407.10188).

Premakumar et al., "Unexpected Benefits of Self-Modeling in Neural Systems" (2024): an auxiliary
output predicts the activations of a hidden layer, and the loss becomes
``task + AW * MSE(predicted, actual)``. The gradient flows into both sides, so besides fitting
the head the network is pushed to make the target layer predictable; the paper reports narrower
weight distributions and lower complexity at equal accuracy. Here the head is a linear map from
hidden state ``source_layer`` (default: the final one) to hidden state ``target_layer`` at every
non-padding position. The head lives in this controller, is trained by the same optimizer, is
saved in checkpoints for resume, and is not part of the saved model.
"""

from __future__ import annotations

import torch
from torch import nn

from forgelib.train.controllers.base import Controller, LoopContext


def masked_mse(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions where ``mask`` (B, T) is 1, averaged over features."""
    weights = mask.unsqueeze(-1).to(predicted.dtype)
    return ((predicted - target) ** 2 * weights).sum() / (weights.sum() * predicted.shape[-1]).clamp(min=1)


class SelfModelHead(Controller):
    name = "self_model"
    wants_hidden_states = True

    def __init__(self, *, hidden_size: int, weight: float, source_layer: int, target_layer: int, seed: int):
        self.weight, self.source_layer, self.target_layer = weight, source_layer, target_layer
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = nn.Linear(hidden_size, hidden_size)
        self.last_mse: float | None = None

    def aux_loss(self, ctx: LoopContext, batch: dict, outputs) -> torch.Tensor:
        hidden = outputs.hidden_states
        predicted = self.head(hidden[self.source_layer])
        mse = masked_mse(predicted, hidden[self.target_layer], batch["attention_mask"])
        self.last_mse = float(mse.detach())
        return self.weight * mse

    def parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def metrics(self) -> dict[str, float]:
        return {} if self.last_mse is None else {"self_model/mse": self.last_mse}

    def state_dict(self) -> dict:
        return {"head": {k: v.detach().clone() for k, v in self.head.state_dict().items()},
                "last_mse": self.last_mse}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.last_mse = state["last_mse"]
