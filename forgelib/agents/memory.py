"""A surprise-gated episodic memory: write what the model got wrong, read it back by similarity.

Design choice (issue 14, part 2): this is the **episodic store**, not a Titans-style neural memory
(Behrouz et al. 2025, arXiv 2501.00663). Titans writes by a gradient step on an associative MLP,
with momentum and decay, and its surprise is that gradient; here an item is written verbatim to a
table of (key, value) slots when the model's loss on it is surprising, and read by
nearest-neighbour retrieval at inference. It is the simpler of the two designs the issue allows,
and every part of it can be checked by hand: a written value comes back exactly, and the gate's
choice is a sort of losses.

- :class:`EpisodicMemory`: ``write(key, value)`` / ``lookup(query, k)`` over cosine similarity of
  key embeddings, a capacity with priority eviction, ``save`` / ``load`` (safetensors + JSON).
- :func:`ngram_embedding`: the default key embedding, a hashed bag of the key's character
  1- and 2-grams (with start and end marks), L2-normalised. Chosen over the model's mean hidden
  state because (a) an exact key then scores exactly 1, so retrieval of a stored key never depends
  on how well a 64-wide model separates short strings, (b) stored embeddings stay valid when the
  model is fine-tuned or swapped, and (c) it needs no forward pass. Keys sharing characters still
  score between 0 and 1, so the nearest neighbour of an unknown key is a similar-looking one.
  Callers with their own embedding (e.g. a model's hidden states) pass ``embedding=``.
- :class:`SurpriseGate`: which items to write given their losses (a threshold, a write budget,
  or both); :func:`answer_surprise` computes those losses with a model.

This store acts at inference. It is unrelated to the training loop's "dreams" replay buffer,
which orders training data.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from forgelib.errors import ForgeError
from forgelib.io import atomic_dir

EMBED_DIM = 1024
"""Buckets of the hashed n-gram embedding: two given n-grams share a bucket with probability 1/1024."""


def _bucket(gram: str, dim: int) -> int:
    # BLAKE2, not ``hash`` (salted per process) nor CRC-32 (linear: n-grams differing in one
    # character, like "7$" and "8$", can land in the same bucket modulo a power of two).
    return int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little") % dim


def ngram_embedding(text: str, dim: int = EMBED_DIM) -> Tensor:
    """(dim,) unit vector: counts of ``text``'s character 1- and 2-grams (``^`` and ``$`` mark the
    ends), hashed into ``dim`` buckets."""
    marked = f"^{text}$"
    grams = list(text) + [marked[i : i + 2] for i in range(len(marked) - 1)]
    buckets = torch.tensor([_bucket(gram, dim) for gram in grams])
    vec = torch.bincount(buckets, minlength=dim).float()
    return vec / vec.norm()


class EpisodicMemory:
    """At most ``capacity`` (key, value) slots, retrieved by cosine similarity of key embeddings.

    Each slot has a ``priority`` (for the surprise-gated writer, the item's loss). A write to a
    full memory evicts the lowest-priority slot, the oldest among equals, and is refused when the
    new item's priority is below every stored one. With equal priorities (the default 0) this is
    FIFO; with losses as priorities, an online stream keeps its ``capacity`` most surprising items.
    """

    def __init__(self, capacity: int, *, dim: int = EMBED_DIM):
        if capacity < 1:
            raise ForgeError(f"EpisodicMemory: capacity must be >= 1, got {capacity}")
        self.capacity, self.dim = capacity, dim
        self.keys: list[str] = []
        self.values: list[str] = []
        self.priorities: list[float] = []
        self.ages: list[int] = []  # write counter at insertion: orders equal priorities
        self.embeddings = torch.zeros(0, dim)  # (n, dim), unit rows
        self.writes = 0  # accepted writes since creation, evicting ones included

    def __len__(self) -> int:
        return len(self.keys)

    def _embed(self, text: str, embedding: Tensor | None, where: str) -> Tensor:
        if embedding is None:
            return ngram_embedding(text, self.dim)
        embedding = torch.as_tensor(embedding, dtype=torch.float32).flatten()
        if embedding.numel() != self.dim:
            raise ForgeError(f"EpisodicMemory.{where}: embedding has {embedding.numel()} values, the memory "
                             f"was built with dim={self.dim}; pass a ({self.dim},) vector or rebuild the memory")
        norm = embedding.norm()
        if not torch.isfinite(norm) or norm == 0:
            raise ForgeError(f"EpisodicMemory.{where}: embedding must be finite and non-zero")
        return embedding / norm

    def write(self, key: str, value: str, *, embedding: Tensor | None = None, priority: float = 0.0) -> bool:
        """Store ``value`` under ``key``; returns False when a full memory refuses it (see class doc)."""
        vec = self._embed(key, embedding, "write")
        if len(self) >= self.capacity:
            lowest = min(range(len(self)), key=lambda i: (self.priorities[i], self.ages[i]))
            if priority < self.priorities[lowest]:
                return False
            for column in (self.keys, self.values, self.priorities, self.ages):
                del column[lowest]
            self.embeddings = torch.cat([self.embeddings[:lowest], self.embeddings[lowest + 1 :]])
        self.keys.append(key)
        self.values.append(value)
        self.priorities.append(float(priority))
        self.ages.append(self.writes)
        self.embeddings = torch.cat([self.embeddings, vec[None]])
        self.writes += 1
        return True

    def lookup(self, query: str, k: int = 1, *, embedding: Tensor | None = None) -> list[tuple[str, float]]:
        """The ``k`` nearest stored values as ``(value, cosine)``, best first (older first on ties);
        fewer when the memory holds fewer, none when it is empty."""
        if k < 1:
            raise ForgeError(f"EpisodicMemory.lookup: k must be >= 1, got {k}")
        if not len(self):
            return []
        scores = self.embeddings @ self._embed(query, embedding, "lookup")  # (n,)
        order = torch.sort(-scores, stable=True).indices[:k]
        return [(self.values[i], float(scores[i])) for i in order.tolist()]

    def save(self, path: str | Path) -> Path:
        """Write ``memory.json`` (keys, values, priorities, settings) and ``embeddings.safetensors``
        to the directory ``path``, atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        with atomic_dir(path) as tmp:
            save_file({"embeddings": self.embeddings.contiguous()}, str(tmp / "embeddings.safetensors"))
            (tmp / "memory.json").write_text(json.dumps({
                "capacity": self.capacity, "dim": self.dim, "writes": self.writes, "keys": self.keys,
                "values": self.values, "priorities": self.priorities, "ages": self.ages}, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EpisodicMemory":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        try:
            meta = json.loads((path / "memory.json").read_text())
            embeddings = load_file(str(path / "embeddings.safetensors"))["embeddings"]
            memory = cls(int(meta["capacity"]), dim=int(meta["dim"]))
            memory.keys, memory.values = list(meta["keys"]), list(meta["values"])
            memory.priorities = [float(p) for p in meta["priorities"]]
            memory.ages, memory.writes = [int(a) for a in meta["ages"]], int(meta["writes"])
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
            raise ForgeError(f"{path}: not a saved EpisodicMemory ({' '.join(str(exc).split())}); "
                             "save one with EpisodicMemory.save") from None
        n = len(memory.keys)
        if not (len(memory.values) == len(memory.priorities) == len(memory.ages) == n
                and tuple(embeddings.shape) == (n, memory.dim) and n <= memory.capacity):
            raise ForgeError(f"{path}: memory.json and embeddings.safetensors disagree on the slots "
                             f"({n} keys, embeddings {tuple(embeddings.shape)}); re-save the memory")
        memory.embeddings = embeddings.float()
        return memory


@dataclass(frozen=True)
class SurpriseGate:
    """Write an item when its loss exceeds ``threshold`` (nats); with a ``budget``, write at most
    that many, the highest losses first. Either may be None; both None writes everything."""

    threshold: float | None = None
    budget: int | None = None

    def __post_init__(self):
        if self.budget is not None and self.budget < 0:
            raise ForgeError(f"SurpriseGate: budget must be >= 0, got {self.budget}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ForgeError(f"SurpriseGate: threshold must be finite, got {self.threshold}")

    def select(self, losses: Sequence[float]) -> list[int]:
        """Indices of the items to write, in stream order. Equal losses at the budget's edge go to
        the earlier item."""
        losses = [float(x) for x in losses]
        chosen = [i for i, x in enumerate(losses) if self.threshold is None or x > self.threshold]
        if self.budget is not None and len(chosen) > self.budget:
            chosen = sorted(sorted(chosen, key=lambda i: (-losses[i], i))[: self.budget])
        return chosen


def answer_surprise(model, tokenizer, rows: Sequence[dict], *, batch_size: int = 256) -> Tensor:
    """(len(rows),) surprise of each row (dicts with prompt, answer): the summed NLL in nats of
    the answer's tokens and ``<eos>`` given the prompt, under ``model``."""
    from forgelib.eval.evaluate import score_rows

    return score_rows(model, tokenizer, rows, batch_size=batch_size).nll
