"""Querybank normalisation with the dynamic inverted softmax (Bogolin et al., CVPR 2022, "Cross
Modal Retrieval with Querybank Normalisation"), as a top-k re-ranker.

Reads: embeddings in memory, the split's and a query bank's. Writes nothing. The bank is a set
of queries from outside the evaluated split (the training split's, embedded in the same joint
space: captions for text-to-audio, clips for audio-to-text). Following the official
dynamic_inverted_softmax.py (ioanacroi/qb-norm):

    S        cosine similarity, queries x gallery (t2a: captions x clips; a2t: clips x captions)
    B        cosine similarity, bank queries x the same gallery
    lse_j    log sum_b exp(beta * B_bj), over the whole bank
    active   the activation set: gallery items in the top-`activation_topk` of some bank query
    S'       S'_qj = exp(beta * S_qj - lse_j) when the query's top-1 gallery item is active,
             S_qj otherwise (the query keeps its raw similarities)

The dynamic rule normalises only queries that look like the bank's, whose top-1 is a gallery
item the bank also reaches; for them, log S' = beta * S_qj - lse_j orders the same as S'.
lse_j and the activation set come from blocked pre-passes over the bank (columns.py); each
query's cosine top-k is ordered by S' and kept above everything else (`TopKScores`,
combine="replace"). The top-1 is taken over the query's whole cosine row, the first maximum on
ties (the rank-1 item of the evaluation's tie rule).
"""

import torch

from ..ranks import DEFAULT_MAX_ELEMENTS
from ..similarity import CosineScores
from ..topk import TopKScores
from .columns import column_hits, column_logsumexp
from .config import BaselineConfig


class QBNormScores(TopKScores):
    """Cosine similarity, each query's top-k re-ordered by QB-Norm's dynamic inverted softmax."""

    def __init__(
        self,
        text: torch.Tensor,
        audio: torch.Tensor,
        bank_text: torch.Tensor,
        bank_audio: torch.Tensor,
        cfg: BaselineConfig,
        device: torch.device | str = "cpu",
        max_elements: int = DEFAULT_MAX_ELEMENTS,
    ):
        cfg.check()
        cosine = CosineScores(text, audio, device)
        super().__init__(cosine, self._rescore, cfg.topk, "replace", query_block=cfg.query_block)
        self.beta = cfg.beta
        bank_to_audio = CosineScores(bank_text, audio, device)  # t2a rows: bank captions x clips
        bank_to_text = CosineScores(text, bank_audio, device)  # a2t rows: bank clips x captions
        nb_text, nb_audio = bank_to_audio.n_text, bank_to_text.n_audio
        na, nt, k = cosine.n_audio, cosine.n_text, cfg.activation_topk
        self.lse = {  # (Ng,) float64 per direction, over the bank
            "t2a": column_logsumexp(bank_to_audio.t2a, nb_text, na, self.beta, max_elements),
            "a2t": column_logsumexp(bank_to_text.a2t, nb_audio, nt, self.beta, max_elements),
        }
        self.active = {  # (Ng,) bool per direction: the activation set
            "t2a": column_hits(bank_to_audio.t2a, nb_text, na, k, max_elements),
            "a2t": column_hits(bank_to_text.a2t, nb_audio, nt, k, max_elements),
        }
        self.bank_sizes = {"captions": nb_text, "clips": nb_audio}

    def _rescore(self, direction: str, row0: int, S: torch.Tensor, top) -> torch.Tensor:
        """log S' on the top-k of queries with an active top-1, S there otherwise; (b, k)."""
        lse = self.lse[direction]
        s = (S if top is None else S.gather(1, top)).double()  # (b, k)
        active = self.active[direction][S.argmax(dim=1)]  # (b,): first maximum = rank 1
        normalised = self.beta * s - (lse if top is None else lse[top])  # (b, k)
        return torch.where(active[:, None], normalised, s)
