"""The inverted softmax (Smith et al. 2017, "Offline bilingual word vectors, orthogonal
transformations and the inverted softmax"), as a top-k re-ranker.

Reads: embeddings in memory. Writes nothing. The softmax runs over the queries instead of the
gallery: the probability that gallery item j is "translated" back to query q,

    S        cosine similarity, queries x gallery (t2a: captions x clips; a2t: clips x captions)
    S'       S'_qj = exp(beta * S_qj) / sum_q' exp(beta * S_q'j), q' over the split's own queries

so a gallery item close to many queries (a hub) is shared out among them. Its log,
beta * S_qj - lse_j, orders the same and keeps float32's resolution; lse_j comes from a blocked
pre-pass over all queries (columns.py). Each query's cosine top-k is ordered by S' and kept
above everything else (`TopKScores`, combine="replace").
"""

import torch

from ..ranks import DEFAULT_MAX_ELEMENTS
from ..similarity import CosineScores
from ..topk import TopKScores
from .columns import split_logsumexp
from .config import BaselineConfig


class InvertedSoftmaxScores(TopKScores):
    """Cosine similarity whose top-k per query is re-ordered by the inverted softmax."""

    def __init__(
        self,
        text: torch.Tensor,
        audio: torch.Tensor,
        cfg: BaselineConfig,
        device: torch.device | str = "cpu",
        max_elements: int = DEFAULT_MAX_ELEMENTS,
    ):
        cfg.check()
        cosine = CosineScores(text, audio, device)
        super().__init__(cosine, self._rescore, cfg.topk, "replace", query_block=cfg.query_block)
        self.beta = cfg.beta
        self.lse = split_logsumexp(cosine, self.beta, max_elements)  # (Ng,) per direction

    def _rescore(self, direction: str, row0: int, S: torch.Tensor, top) -> torch.Tensor:
        """log S' on each row's top-k, (b, k) float64."""
        lse = self.lse[direction]
        s = (S if top is None else S.gather(1, top)).double()  # (b, k)
        return self.beta * s - (lse if top is None else lse[top])
