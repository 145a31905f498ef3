"""Geometry probe: TwoNN intrinsic dimension of hidden states, and the grokking stage.

Every ``every`` steps one no-grad forward pass over a fixed probe set of validation prompts
collects, at each chosen hidden-state index, the representation of the last prompt token (the
position that predicts the answer): one point per prompt. Its TwoNN intrinsic dimension (ID) and
ID / d (d = hidden width) are logged. At each evaluation the stage is re-classified from the
recent ID trend at the last chosen layer and the train/validation accuracy gap, with the rule
documented in :func:`forgelib.train.geometry.classify_grokking_stage`.

With ``family`` set (``train.geometry.family``) the probe set is that family's validation prompts
and the rule reads that family's in-loop train and validation accuracy. Deviation from a
single-task grokking setup, and why: the train stage fits eight tasks at once, so the overall
accuracy is already above the rule's thresholds and moves smoothly while one family (the modular
one) rises; read on the whole mixture the label stayed ``active`` at every probe.
"""

from __future__ import annotations

import torch

from forgelib.data.batching import collate
from forgelib.train.controllers.base import Controller, LoopContext
from forgelib.train.geometry import STAGES, classify_grokking_stage, twonn_dimension


@torch.no_grad()
def last_prompt_token_states(model, tokenizer, prompts: list[str], layers: list[int]) -> dict[int, torch.Tensor]:
    """Hidden-state index -> (N, d) states at each prompt's last token."""
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in collate([(ids, ids) for ids in encoded], tokenizer.pad_token_id).items()}
    was_training = model.training
    model.eval()
    hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   output_hidden_states=True).hidden_states
    model.train(was_training)
    last = torch.tensor([len(ids) - 1 for ids in encoded], device=device)
    rows = torch.arange(len(encoded), device=device)
    return {layer: hidden[layer][rows, last].float().cpu() for layer in layers}


class GeometryProbe(Controller):
    name = "geometry"

    def __init__(self, *, probe_prompts: list[str], layers: list[int], every: int, trend_window: int,
                 hidden_size: int, family: str | None = None):
        self.prompts, self.layers, self.every, self.family = probe_prompts, layers, every, family
        self.trend_window, self.hidden_size = trend_window, hidden_size
        self.ids: dict[str, list[float | None]] = {str(layer): [] for layer in layers}
        self.stage: str | None = None
        self.stages: list[list] = []

    def on_step_end(self, ctx: LoopContext, step: int, rows: list[dict], stats) -> None:
        if (step + 1) % self.every == 0:
            self.probe(ctx.model, ctx.tokenizer)

    def probe(self, model, tokenizer) -> None:
        states = last_prompt_token_states(model, tokenizer, self.prompts, self.layers)
        for layer, points in states.items():
            try:
                self.ids[str(layer)].append(twonn_dimension(points))
            except ValueError:  # fewer than 3 distinct points (e.g. the embedding of one shared token)
                self.ids[str(layer)].append(None)

    def on_eval(self, ctx: LoopContext, step: int, metrics: dict) -> None:
        trend = [v for v in self.ids[str(self.layers[-1])] if v is not None][-self.trend_window:]
        if self.family is None:
            train_acc, val_acc = metrics["train_acc"], metrics["val_acc"]
        else:
            train_acc, val_acc = metrics["train_families"][self.family], metrics["val_families"][self.family]
        self.stage = classify_grokking_stage(trend, train_acc=train_acc, val_acc=val_acc)
        self.stages.append([step + 1, self.stage])

    def metrics(self) -> dict[str, float]:
        out = {}
        for layer, values in self.ids.items():
            if values and values[-1] is not None:
                out[f"geometry/id/L{layer}"] = values[-1]
                out[f"geometry/id_ratio/L{layer}"] = values[-1] / self.hidden_size
        if self.stage is not None:
            out["geometry/stage"] = float(STAGES.index(self.stage))
        return out

    def state_dict(self) -> dict:
        return {"ids": self.ids, "stage": self.stage, "stages": self.stages}

    def load_state_dict(self, state: dict) -> None:
        self.ids, self.stage, self.stages = state["ids"], state["stage"], state["stages"]
