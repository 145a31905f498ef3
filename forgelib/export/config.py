"""``deploy:`` params: the GGUF tensor type of ``dist/`` and the size of its logit check."""

from __future__ import annotations

from dataclasses import dataclass

from forgelib.configtools import check, doc

GGUF_TYPES = ("f16", "f32", "q8_0", "q4_0", "tq1_0", "tq2_0")
"""``--gguf-type`` / ``deploy.gguf_type`` names, as llama.cpp spells the ggml types (lower case)."""


@dataclass(frozen=True)
class DeployConfig:
    """What the ``deploy`` stage ships in ``dist/`` next to the container and its HF directory."""

    gguf_type: str = doc(
        "ggml type of the GGUF's 2-D weights: f16, f32, q8_0, q4_0 (rows a multiple of 32), tq1_0 or "
        "tq2_0 (ternary weights, rows a multiple of 256). A weight the type cannot hold is written "
        "as F16 (the export prints which); norms and other 1-D tensors are always F32.", default="f16")
    prompts_per_task: int = doc(
        "Validation prompts per task (the first N of each task's validation split) on which the "
        "exported models' logits are compared with the container's model.", default=8)
    max_new_tokens: int = doc(
        "Greedy tokens generated per prompt to check that the HF directory generates what the "
        "container's model does.", default=8)

    def __post_init__(self):
        check(self.gguf_type in GGUF_TYPES, "gguf_type", f"one of {', '.join(GGUF_TYPES)}", self.gguf_type)
        check(self.prompts_per_task >= 1, "prompts_per_task", "an integer >= 1", self.prompts_per_task)
        check(self.max_new_tokens >= 1, "max_new_tokens", "an integer >= 1", self.max_new_tokens)
