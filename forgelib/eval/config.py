"""``humaneval:`` params: which phase models the ``humaneval@NAME`` stages score, and how."""

from __future__ import annotations

from dataclasses import dataclass

from forgelib.configtools import check, doc


@dataclass(frozen=True)
class HumanEvalConfig:
    """HumanEval pass@1 of each phase's model: one `humaneval@NAME` stage per entry of ``models``."""

    models: dict[str, str] = doc(
        "Name -> model path (an HF directory, or a compressed container's directory) that a "
        "`humaneval@NAME` stage scores. Empty (the embedded default, whose character-level models "
        "cannot write Python): no HumanEval stages.", default_factory=dict)
    limit: int = doc("Score the first N of the 164 problems (164: all of them).", default=164)
    max_new_tokens: int = doc("Generation budget per completion (greedy).", default=384)

    def __post_init__(self):
        check(isinstance(self.models, dict), "models", "a mapping of name -> model path", self.models)
        for name, path in self.models.items():
            check(isinstance(name, str) and name.isidentifier(), f"models.{name}",
                  "a name of letters, digits and _ (it names the stage humaneval@NAME)", name)
            check(isinstance(path, str) and bool(path), f"models.{name}", "a model path", path)
        check(1 <= self.limit <= 164, "limit", "an integer in 1..164", self.limit)
        check(self.max_new_tokens >= 1, "max_new_tokens", "an integer >= 1", self.max_new_tokens)
