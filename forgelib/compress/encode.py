"""Encode one weight with its group's codec and measure what it cost (bytes, SNR, seconds).

The error is measured by decoding the payload right away, so every SNR we report is that of the
bytes that go into the container.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass

import torch

from forgelib.compress.codecs.registry import config_to_dict, decode_entry, get_codec
from forgelib.compress.config import KEEP, CodecSpec
from forgelib.compress.container import Entry


@dataclass
class Encoded:
    """A weight's container entry plus its fidelity: ``signal`` = sum w^2, ``noise`` = sum (w - w_hat)^2."""

    entry: Entry
    group: str
    n_params: int
    signal: float
    noise: float
    seconds: float

    @property
    def payload_bytes(self) -> int:
        return self.entry.payload.nbytes()


def snr_db(signal: float, noise: float) -> float | None:
    """10 log10(signal / noise); ``None`` when the reconstruction is exact (infinite SNR)."""
    if noise <= 0:
        return None
    return 10 * math.log10(max(signal, 1e-30) / noise)


def encode_tensor(tensor: torch.Tensor, group: str, spec: CodecSpec, *,
                  hessian: torch.Tensor | None = None, kept: Encoded | None = None,
                  reference: torch.Tensor | None = None) -> Encoded:
    """Encode ``tensor``; ``keep`` reuses ``kept`` (stage 1's entry). The error is measured
    against ``reference`` (default: the tensor itself)."""
    reference = tensor if reference is None else reference
    start = time.perf_counter()
    if spec.codec == KEEP:
        entry = kept.entry
    else:
        codec = get_codec(spec.codec)
        payload = (codec.encode(tensor, spec.settings, hessian=hessian) if codec.needs_hessian
                   else codec.encode(tensor, spec.settings))
        entry = Entry(spec.codec, config_to_dict(spec.settings), payload)
    seconds = time.perf_counter() - start
    decoded = decode_entry(entry).float()
    ref = reference.detach().float()
    return Encoded(entry, group, tensor.numel(), float(ref.pow(2).sum()), float((ref - decoded).pow(2).sum()), seconds)


def _summary(items: list[Encoded]) -> dict:
    n = sum(e.n_params for e in items)
    payload = sum(e.payload_bytes for e in items)
    return {"n_params": n, "payload_bytes": payload, "bits_per_param": 8 * payload / max(n, 1),
            "snr_db": snr_db(sum(e.signal for e in items), sum(e.noise for e in items)),
            "encode_seconds": sum(e.seconds for e in items)}


def summarize(encoded: dict[str, Encoded]) -> dict:
    """Per-group and per-codec sizes and SNR (aggregated over tensors: total signal / total noise)."""
    by_group: dict[str, list[Encoded]] = defaultdict(list)
    by_codec: dict[str, list[Encoded]] = defaultdict(list)
    for item in encoded.values():
        by_group[item.group].append(item)
        by_codec[item.entry.codec].append(item)
    groups = {}
    for group, items in sorted(by_group.items()):
        codecs = sorted({(e.entry.codec, str(sorted(e.entry.config.items()))) for e in items})
        groups[group] = _summary(items) | {
            "codec": items[0].entry.codec if len(codecs) == 1 else "mixed",
            "settings": items[0].entry.config if len(codecs) == 1 else None,
        }
    return {"groups": groups, "codecs": {c: _summary(items) for c, items in sorted(by_codec.items())},
            "snr_db": _summary(list(encoded.values()))["snr_db"]}
