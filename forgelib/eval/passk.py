"""Unbiased pass@k estimator.

Chen et al. 2021, "Evaluating Large Language Models Trained on Code" (arXiv 2107.03374), eq. 1:
with ``n`` samples of which ``c`` are correct, ``pass@k = 1 - C(n-c, k) / C(n, k)``, averaged
over problems. The binomial ratio overflows for large ``n``, so it is computed as the product
``prod_{i=n-c+1}^{n} (1 - k / i)`` (the paper's numerically stable form).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from forgelib.errors import ForgeError


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` samples drawn without replacement is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ForgeError(f"pass@k: need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(results: Sequence[Sequence[bool]], k: int) -> float:
    """pass@k averaged over problems; ``results[p]`` are the per-sample outcomes of problem p."""
    if not results:
        raise ForgeError("pass@k: no problems were scored")
    return float(np.mean([pass_at_k(len(r), int(sum(r)), k) for r in results]))
