"""The co-attention head (Sun et al. 2024) on cached frame and token features.

attention.py (multi-head attention), units.py (SA, GA), model.py (modules, variants, pair
scores), sequences.py (ragged features out of a cache), loader.py (streamed training batches),
loss.py (NT-Xent), train.py (epochs, validation, checkpoints), rerank.py (top-k re-ranking as
a `Scores`), checkpoint.py, evaluate.py (evaluation with a trained head).
"""

from .checkpoint import CoHead, is_coattention_checkpoint, load_coattention, save_coattention
from .config import CoAttentionConfig, CoRerankConfig
from .loader import PairBatch, PairStream
from .loss import nt_xent
from .model import CoAttentionHead, CoAttentionModule, ItemState, masked_mean
from .rerank import CoAttentionScores

__all__ = [
    "CoAttentionConfig",
    "CoAttentionHead",
    "CoAttentionModule",
    "CoAttentionScores",
    "CoHead",
    "CoRerankConfig",
    "ItemState",
    "PairBatch",
    "PairStream",
    "is_coattention_checkpoint",
    "load_coattention",
    "masked_mean",
    "nt_xent",
    "save_coattention",
]
