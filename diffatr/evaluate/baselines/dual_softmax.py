"""Dual softmax at inference (Cheng et al. 2021, "Improving Video-Text Retrieval by Multi-Stream
Corpus Alignment and Dual Softmax Loss"), as a top-k re-ranker.

Reads: embeddings in memory. Writes nothing. Each gallery item's column of S is turned into a
prior over the evaluated split's own queries, and the similarity is revised by it:

    S        cosine similarity, queries x gallery (t2a: captions x clips; a2t: clips x captions)
    prior    prior_qj = softmax over the queries q' of (S_q'j / T), at q: exp(S_qj / T - lse_j)
    S'       S'_qj = S_qj * prior_qj (DSL.py also multiplies by the number of queries, a
             constant that changes no ranking)

A hub (a gallery item close to many queries) gets a small prior in every column entry but its
best match, so it drops in the rankings of the queries that are not its own. lse_j comes from a
blocked pre-pass over all queries (columns.py); each query's cosine top-k is then ordered by S'
and kept above everything else (`TopKScores`, combine="replace").
"""

import torch

from ..ranks import DEFAULT_MAX_ELEMENTS
from ..similarity import CosineScores
from ..topk import TopKScores
from .columns import split_logsumexp
from .config import BaselineConfig


def signed_log(s: torch.Tensor, log_factor: torch.Tensor) -> torch.Tensor:
    """A strictly increasing function of S' = s * exp(log_factor) along each row of (b, k).

    S' spans hundreds of decades (exp(-200) at T = 0.01), so in float32, after the replace
    shift by 2, most of it would tie. sign(S') * (1 + log|S'| - min_row log|S'|) keeps every
    order and a relative resolution of ~1e-5 whatever the magnitudes; S' = 0 maps to 0.
    """
    log_abs = torch.log(s.abs()) + log_factor  # -inf where s == 0
    finite = torch.isfinite(log_abs)
    floor = torch.where(finite, log_abs, torch.inf).amin(dim=1, keepdim=True)  # (b, 1)
    magnitude = torch.where(finite, 1.0 + log_abs - floor, 0.0)  # >= 1 where s != 0
    return torch.sign(s) * magnitude


class DualSoftmaxScores(TopKScores):
    """Cosine similarity whose top-k per query is re-ordered by S * prior, both directions."""

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
        self.scale = 1.0 / cfg.temperature
        self.lse = split_logsumexp(cosine, self.scale, max_elements)  # (Ng,) per direction

    def _rescore(self, direction: str, row0: int, S: torch.Tensor, top) -> torch.Tensor:
        """signed_log of S' on each row's top-k, (b, k) float64."""
        lse = self.lse[direction]
        s = (S if top is None else S.gather(1, top)).double()  # (b, k)
        log_prior = self.scale * s - (lse if top is None else lse[top])  # (b, k)
        return signed_log(s, log_prior)
