"""Inference-time re-ranking baselines with no training, over the same cosine top-k as the
diffusion head: dual softmax (dual_softmax.py), the inverted softmax (inverted_softmax.py) and
QB-Norm's dynamic inverted softmax (qb_norm.py); columns.py holds their shared blocked column
pre-pass, evaluate.py the factory and the cache evaluation."""

from .config import BASELINES, BaselineConfig
from .dual_softmax import DualSoftmaxScores
from .evaluate import baseline_scores, evaluate_baseline, load_bank
from .inverted_softmax import InvertedSoftmaxScores
from .qb_norm import QBNormScores

__all__ = [
    "BASELINES",
    "BaselineConfig",
    "DualSoftmaxScores",
    "InvertedSoftmaxScores",
    "QBNormScores",
    "baseline_scores",
    "evaluate_baseline",
    "load_bank",
]
