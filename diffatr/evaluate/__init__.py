"""Retrieval evaluation from cached features: ranks, the paper, DCASE and DCASE 2025
protocols, reports."""

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
