"""Per-token perplexity from summed negative log-likelihoods, as a local `evaluate` module.

Takes per-example summed NLL (nats) and token counts and returns exp(total NLL / total tokens):
the token-weighted perplexity, so long answers weigh by their length as in corpus perplexity.
"""

import math

import datasets
import evaluate

_DESCRIPTION = "Token-weighted perplexity exp(sum NLL / sum tokens)."
_KWARGS = """
Args:
    nll (list[float]): summed negative log-likelihood of each example, in nats.
    n_tokens (list[int]): scored tokens of each example.
Returns:
    perplexity (float), mean_nll (float): per token; n_tokens (int).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class TokenPerplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"nll": datasets.Value("float64"), "n_tokens": datasets.Value("int64")}),
        )

    def _compute(self, nll, n_tokens):
        total = sum(n_tokens)
        mean_nll = sum(nll) / total if total else float("nan")
        return {"perplexity": math.exp(mean_nll), "mean_nll": mean_nll, "n_tokens": total}
