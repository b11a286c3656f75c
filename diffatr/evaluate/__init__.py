"""Retrieval evaluation from cached features: ranks, the paper, DCASE and DCASE 2025
protocols, reports.

This package is also the function `diffatr.evaluate(cache, head=None, ...)` of the Python API
(`diffatr.api.evaluation.evaluate`): the package and the function share the name
`diffatr.evaluate`, and importing a subpackage rebinds its parent's attribute to the module, so
the module itself forwards calls to the function.
"""

import sys
import types

from .cached import EvalConfig, EvalResult, evaluate_cache
from .dcase import jackknife_interval, write_submission
from .dcase2025 import dcase2025_protocol, read_relevance, write_predictions
from .metrics import a2t_metrics, dcase_protocol, paper_protocol, t2a_metrics
from .ranks import a2t_ranks, t2a_ranks
from .report import format_table, write_json
from .similarity import CosineScores, DenseScores, Scores
from .topk import TopKScores, topk_indices

__all__ = [
    "CosineScores",
    "DenseScores",
    "EvalConfig",
    "EvalResult",
    "Scores",
    "TopKScores",
    "a2t_metrics",
    "a2t_ranks",
    "dcase2025_protocol",
    "dcase_protocol",
    "evaluate_cache",
    "format_table",
    "jackknife_interval",
    "paper_protocol",
    "read_relevance",
    "t2a_metrics",
    "t2a_ranks",
    "topk_indices",
    "write_json",
    "write_predictions",
    "write_submission",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from ..api.evaluation import evaluate

        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
