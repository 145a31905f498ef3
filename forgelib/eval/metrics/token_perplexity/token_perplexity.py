"""Per-token perplexity from summed negative log-likelihoods, as a local `evaluate` module.

Takes per-example summed NLL (nats) and token counts and returns exp(total NLL / total tokens):
the token-weighted perplexity, so long answers weigh by their length as in corpus perplexity.
The arithmetic is :func:`forgelib.eval.scoring.perplexity`, which training and evaluation share.
"""

import datasets
import evaluate

from forgelib.eval.scoring import mean_nll, perplexity

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
        return {"perplexity": perplexity(nll, n_tokens), "mean_nll": mean_nll(nll, n_tokens), "n_tokens": sum(n_tokens)}
