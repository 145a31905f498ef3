"""The specialized artifact: baked weights plus SVF experts and a dispatcher beside them.

``models/specialized/`` is a plain Hugging Face directory (``from_pretrained`` gives the baked
model, no experts) with two side files:

- ``specialize.json``: format version, the families and their label characters, ``max_mult``,
  the adapted weight names, how the experts were trained;
- ``svf_experts.safetensors``: every family's z vectors as one flat tensor (``experts/<family>``:
  the weights' vectors concatenated in the order of ``specialize.json``'s ``weights``, whose
  lengths are its ``sizes``) and the dispatcher's (``dispatcher``), in fp16 (z vectors are tiny;
  fp16 changes W' by far less than the test figures resolve). One tensor per expert keeps the
  safetensors header small: with a tensor per weight, the names cost more bytes than the values.

:class:`SpecializedModel` is what ``forge eval``/``test``/``serve`` use. It recomputes the SVD
from the weights it was given, because the singular vectors belong to the weights: a compressed
container decodes to different weights, whose own SVD the z vectors then rescale (the
"adapted retention" the compress stage reports). ``from_parts`` takes the side files as bytes
so a container can carry them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

from forgelib.data.tasks import get_task
from forgelib.errors import ForgeError
from forgelib.eval.evaluate import evaluate_answers, score_rows
from forgelib.eval.generate import greedy_answers
from forgelib.specialize.dispatch import classify
from forgelib.specialize.svf import Expert, Factors, compute_svd, svf_applied

SIDE_JSON = "specialize.json"
SIDE_EXPERTS = "svf_experts.safetensors"
SIDE_FILES = (SIDE_JSON, SIDE_EXPERTS)
FORMAT = 2


def encode_side_files(meta: Mapping, experts: Mapping[str, Expert], dispatcher: Expert) -> dict[str, bytes]:
    """The two side files as bytes (``meta`` must list families, labels, max_mult and weights)."""
    from safetensors.torch import save

    names = list(meta["weights"])

    def flat(expert: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([expert[name].detach().reshape(-1) for name in names]).to(torch.float16).contiguous()

    tensors = {f"experts/{family}": flat(expert) for family, expert in experts.items()}
    tensors["dispatcher"] = flat(dispatcher)
    meta = {"format": FORMAT, **meta, "sizes": [int(dispatcher[name].numel()) for name in names]}
    return {SIDE_JSON: (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(), SIDE_EXPERTS: save(tensors)}


def is_specialized(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` carries SVF experts beside its weights."""
    return (Path(model_dir) / SIDE_JSON).is_file()


def read_side_files(model_dir: str | Path) -> dict[str, bytes]:
    """The side files of a specialized directory, as bytes (what a container carries)."""
    missing = [name for name in SIDE_FILES if not (Path(model_dir) / name).is_file()]
    if missing:
        raise ForgeError(f"{model_dir}: {missing[0]} is missing; not a specialized model directory "
                         "(rerun the specialize stage)")
    return {name: (Path(model_dir) / name).read_bytes() for name in SIDE_FILES}


def decode_side_files(side_files: Mapping[str, bytes], where: str = "side files") -> tuple[dict, dict, dict]:
    """``(meta, experts, dispatcher)`` from the side files' bytes, checked."""
    from safetensors.torch import load

    try:
        meta = json.loads(side_files[SIDE_JSON])
        tensors = load(side_files[SIDE_EXPERTS])
    except KeyError as exc:
        raise ForgeError(f"{where}: {exc.args[0]} is missing") from None
    except Exception as exc:  # malformed JSON or safetensors bytes
        raise ForgeError(f"{where}: unreadable side file ({' '.join(str(exc).split())})") from None
    for key in ("format", "families", "labels", "max_mult", "weights", "sizes"):
        if key not in meta:
            raise ForgeError(f"{where}: {SIDE_JSON} lacks {key!r}; rewrite it with the specialize stage")
    if meta["format"] != FORMAT:
        raise ForgeError(f"{where}: {SIDE_JSON} format {meta['format']}, this Forge reads format {FORMAT}")

    def vectors(key: str) -> dict:
        if key not in tensors:
            raise ForgeError(f"{where}: {SIDE_EXPERTS} lacks {key}")
        values = tensors[key].float()
        if values.numel() != sum(meta["sizes"]):
            raise ForgeError(f"{where}: {SIDE_EXPERTS} {key} has {values.numel()} values, {SIDE_JSON} sizes "
                             f"sum to {sum(meta['sizes'])}")
        return dict(zip(meta["weights"], values.split(meta["sizes"])))

    return meta, {family: vectors(f"experts/{family}") for family in meta["families"]}, vectors("dispatcher")


class SpecializedModel:
    """A model that adapts per prompt: the dispatcher picks a family, that family's expert answers."""

    def __init__(self, model, tokenizer, meta: Mapping, experts: Mapping[str, Expert], dispatcher: Expert,
                 where: str = "specialized model", svd: Mapping[str, Factors] | None = None):
        """``svd``: the factors of ``model``'s current weights when the caller has them (another
        SpecializedModel's ``svd`` over the same model), else computed here."""
        self.model, self.tokenizer, self.meta = model.eval(), tokenizer, dict(meta)
        self.experts, self.dispatcher = dict(experts), dispatcher
        self.max_mult = float(meta["max_mult"])
        svd = compute_svd(model) if svd is None else svd
        missing = [name for name in meta["weights"] if name not in svd]
        if missing:
            raise ForgeError(f"{where}: the weights have no {missing[0]}; the experts belong to another architecture")
        self.svd = {name: svd[name] for name in meta["weights"]}
        for owner, expert in [*self.experts.items(), ("dispatcher", dispatcher)]:
            for name, z in expert.items():
                if z.shape != self.svd[name].s.shape:
                    raise ForgeError(f"{where}: {owner} z of {name} has shape {tuple(z.shape)}, the weight has "
                                     f"{tuple(self.svd[name].s.shape)} singular values")

    @classmethod
    def load(cls, model_dir: str | Path) -> "SpecializedModel":
        from forgelib.models.hf import load_model

        side = read_side_files(model_dir)
        model, tokenizer = load_model(model_dir)
        return cls.from_parts(model, tokenizer, side, where=str(model_dir))

    @classmethod
    def from_parts(cls, model, tokenizer, side_files: Mapping[str, bytes], where: str = "side files",
                   svd: Mapping[str, Factors] | None = None) -> "SpecializedModel":
        meta, experts, dispatcher = decode_side_files(side_files, where)
        return cls(model, tokenizer, meta, experts, dispatcher, where, svd)

    @property
    def families(self) -> list[str]:
        return list(self.meta["families"])

    def dispatch(self, prompts: Sequence[str], *, batch_size: int = 256) -> list[str]:
        """The family chosen for each prompt."""
        return classify(self.model, self.tokenizer, self.svd, self.dispatcher, self.max_mult, prompts,
                        self.meta["labels"], batch_size=batch_size)

    def _adapted_groups(self, routes: Sequence[str]) -> Iterator[tuple[str, list[int]]]:
        """``(family, indices)`` for each group of prompts dispatched (``routes``) to one family;
        while a group is being handled, the model carries that family's adapted weights."""
        groups: dict[str, list[int]] = {}
        for i, family in enumerate(routes):
            groups.setdefault(family, []).append(i)
        for family, idx in groups.items():
            with svf_applied(self.model, self.svd, self.experts[family], self.max_mult):
                yield family, idx

    def answers(self, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 256,
                routes: Sequence[str] | None = None) -> list[str]:
        """Greedy answers, each prompt adapted by the expert its dispatch chose (``routes``, when
        the caller has dispatched the prompts already)."""
        if routes is None:
            routes = self.dispatch(prompts, batch_size=batch_size)
        out: list[str] = [""] * len(prompts)
        for _, idx in self._adapted_groups(routes):
            preds = greedy_answers(self.model, self.tokenizer, [prompts[i] for i in idx],
                                   max_new_tokens=max_new_tokens, batch_size=batch_size)
            for i, pred in zip(idx, preds):
                out[i] = pred
        return out

    def evaluate(self, tasks: Mapping, *, split: str = "test", limit: int | None = None, batch_size: int = 256) -> dict:
        """:func:`forgelib.eval.evaluate.evaluate_model`'s result, adapted per prompt, plus
        ``dispatch_accuracy`` (the share of rows routed to their own family's expert). Each task's
        prompts are dispatched once: the answers and the answer NLL use the same routes."""
        routes: list[list[str]] = []  # per task, in order: evaluate_answers calls nll right after answer

        def answer(prompts: list[str], budget: int) -> list[str]:
            routes.append(self.dispatch(prompts, batch_size=batch_size))
            return self.answers(prompts, max_new_tokens=budget, batch_size=batch_size, routes=routes[-1])

        def nll(rows: list[dict]) -> tuple[list[float], list[int]]:
            nll_sums, counts = [], []
            for _, idx in self._adapted_groups(routes[-1]):
                scores = score_rows(self.model, self.tokenizer, [rows[i] for i in idx], batch_size=batch_size)
                nll_sums += scores.nll.tolist()
                counts += scores.n_tokens.tolist()
            return nll_sums, counts

        result = evaluate_answers(answer, tasks, split=split, limit=limit, nll_fn=nll)
        routed = [family == get_task(name).family for name, task_routes in zip(tasks, routes) for family in task_routes]
        result["dispatch_accuracy"] = sum(routed) / len(routed) if routed else None
        return result
