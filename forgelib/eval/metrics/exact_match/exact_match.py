"""Exact match as a local `evaluate` module (hub metric scripts are unreachable offline).

Loaded by path: ``evaluate.load(<this directory>)``. A prediction scores 1 when it equals the
reference exactly after stripping surrounding whitespace, else 0; the comparison itself is
:func:`forgelib.eval.scoring.exact_match`, which training and evaluation share.
"""

import datasets
import evaluate

from forgelib.eval.scoring import accuracy, exact_match

_DESCRIPTION = "Fraction of predictions equal to their reference (whitespace-stripped)."
_KWARGS = """
Args:
    predictions (list[str]): model outputs.
    references (list[str]): expected answers.
Returns:
    exact_match (float): mean of per-example matches; n (int): number of examples.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        hits = exact_match(predictions, references)
        return {"exact_match": accuracy(hits), "n": len(hits)}
