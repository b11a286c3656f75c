"""Per-query outcomes of one ranking: each query's ground-truth rank and its best few candidates.

Reads: the similarity blocks a `Scores` hands out (`RecordingScores` wraps one and passes every
block on unchanged, so a re-ranker's scores are computed once for the metrics and the record)
and the caption -> clip index. Writes nothing; html_report.py turns two systems' outcomes into
a page.

    t2a  query = caption j with a clip; rank = the rank of its clip (ranks.py's rule);
         top = the best `top` clips with their scores. With a DCASE 2025 relevance file
         (`relevance=`): query = caption j listed there; rank = the best rank among its
         relevant clips (r_1, what that protocol's R@k uses), as the metrics rank it
    a2t  query = clip i with captions; rank = the rank of its best-ranked caption (what the
         paper's a2t R@k, medR and meanR use); top = the best `top` captions
Ties follow ranks.py: descending score, then gallery order. A direction the protocol does not
rank (a2t under dcase) stays unrecorded.
"""

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..atomic import atomic_open
from .ranks import _check_finite, _rank_of


@dataclass
class QueryOutcomes:
    """One system's per-query record; rank 0 = not a query (no ground truth)."""

    t2a_rank: np.ndarray  # (Nt,) int64, rank of caption j's clip
    t2a_top: np.ndarray  # (Nt, k) int64 clip rows, best first
    t2a_score: np.ndarray  # (Nt, k) float32, their scores
    a2t_rank: np.ndarray  # (Na,) int64, rank of clip i's best-ranked caption
    a2t_top: np.ndarray  # (Na, k) int64 caption rows, best first
    a2t_score: np.ndarray  # (Na, k) float32
    directions: tuple[str, ...] = field(default=())  # the directions actually ranked


def stable_topk(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k best (scores, columns) of block (b, M): descending score, ties by column."""
    b = block.shape[0]
    if k == 0:
        return block[:, :0], torch.zeros((b, 0), dtype=torch.int64, device=block.device)
    kth = block.topk(k, dim=1).values[:, -1:]  # (b, 1): the k-th best score of each row
    rows, cols = (block >= kth).nonzero(as_tuple=True)  # >= k entries per row, row-major
    vals = block[rows, cols]
    order = torch.sort(-vals, stable=True).indices  # best first, then column (nonzero's order)
    order = order[torch.sort(rows[order], stable=True).indices]  # grouped by row
    rows, cols, vals = rows[order], cols[order], vals[order]
    first = torch.cumsum(torch.bincount(rows, minlength=b), 0) - torch.bincount(rows, minlength=b)
    keep = torch.arange(len(rows), device=block.device) - first[rows] < k
    return vals[keep].view(b, k), cols[keep].view(b, k)


class RecordingScores:
    """A `Scores` that records each query's outcome from the blocks it passes on."""

    def __init__(self, scores, audio_index: torch.Tensor, top: int = 5, relevance=None):
        self.scores = scores
        self.relevance = relevance  # dcase2025.Relevance: t2a ranks against its sets
        self.n_text, self.n_audio = scores.n_text, scores.n_audio
        self.index = audio_index.cpu().to(torch.int64)
        kt, ka = min(top, self.n_audio), min(top, self.n_text)
        self.out = QueryOutcomes(
            t2a_rank=np.zeros(self.n_text, np.int64),
            t2a_top=np.full((self.n_text, kt), -1, np.int64),
            t2a_score=np.zeros((self.n_text, kt), np.float32),
            a2t_rank=np.zeros(self.n_audio, np.int64),
            a2t_top=np.full((self.n_audio, ka), -1, np.int64),
            a2t_score=np.zeros((self.n_audio, ka), np.float32),
        )
        self.order = torch.argsort(self.index, stable=True)  # captions grouped by clip
        self.grouped = self.index[self.order].contiguous()
        self.ranked: set[str] = set()

    def outcomes(self) -> QueryOutcomes:
        self.out.directions = tuple(d for d in ("t2a", "a2t") if d in self.ranked)
        return self.out

    def t2a(self, start: int, stop: int) -> torch.Tensor:
        block = self.scores.t2a(start, stop)  # (b, Na)
        _check_finite(block, "text-to-audio", start)
        if self.relevance is not None:
            rank = self._relevant_rank(block, start, stop)
        else:
            target = self.index[start:stop].to(block.device)
            rank = torch.where(target >= 0, _rank_of(block, target.clamp_min(0)), 0)
        self._store("t2a", start, rank, *stable_topk(block, self.out.t2a_top.shape[1]))
        return block

    def _relevant_rank(self, block: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """(b,) each caption's best rank among its relevant clips; 0 for a caption not listed."""
        rel = self.relevance
        q0, q1 = np.searchsorted(rel.rows, [start, stop])
        sizes = np.diff(rel.offsets[q0 : q1 + 1])
        rows = torch.as_tensor(np.repeat(rel.rows[q0:q1] - start, sizes), device=block.device)
        clips = rel.clips[rel.offsets[q0] : rel.offsets[q1]]  # (n,) aligned with rows
        ranks = _rank_of(block[rows], torch.as_tensor(clips, device=block.device))  # (n,)
        big = torch.full((len(block),), self.n_audio + 1, dtype=torch.int64, device=block.device)
        best = big.scatter_reduce(0, rows, ranks.to(torch.int64), "amin")
        return torch.where(best > self.n_audio, 0, best)

    def a2t(self, start: int, stop: int) -> torch.Tensor:
        block = self.scores.a2t(start, stop)  # (b, Nt)
        _check_finite(block, "audio-to-text", start)
        lo, hi = torch.searchsorted(self.grouped, torch.tensor([start, stop])).tolist()
        captions = self.order[lo:hi].to(block.device)  # (n,) the block's clips' captions
        rows = (self.grouped[lo:hi] - start).to(block.device)  # (n,) their clip's block row
        s = block[rows, captions]  # (n,)
        best_s = torch.full((len(block),), -torch.inf, device=block.device, dtype=block.dtype)
        best_s = best_s.scatter_reduce(0, rows, s, "amax")  # (b,) each clip's best caption score
        best = torch.full((len(block),), self.n_text, device=block.device, dtype=torch.int64)
        best = best.scatter_reduce(0, rows, captions.where(s == best_s[rows], self.n_text), "amin")
        has = best < self.n_text  # clips with captions
        rank = torch.zeros(len(block), dtype=torch.int64, device=block.device)
        if has.any():
            rank[has] = _rank_of(block[has], best[has])
        self._store("a2t", start, rank, *stable_topk(block, self.out.a2t_top.shape[1]))
        return block

    def _store(self, direction, start, rank, scores, top) -> None:
        stop = start + len(rank)
        getattr(self.out, f"{direction}_rank")[start:stop] = rank.cpu().numpy()
        getattr(self.out, f"{direction}_top")[start:stop] = top.cpu().numpy()
        getattr(self.out, f"{direction}_score")[start:stop] = scores.float().cpu().numpy()
        self.ranked.add(direction)


@dataclass(frozen=True)
class Change:
    """How many queries of one direction a system moved against a base ranking."""

    queries: int
    improved: int  # ground truth ranked higher (smaller rank) than under the base
    worsened: int
    unchanged: int


def rank_changes(base: QueryOutcomes, other: QueryOutcomes, direction: str) -> Change:
    """Counts of queries whose ground-truth rank `other` improved or worsened against `base`."""
    r0, r1 = getattr(base, f"{direction}_rank"), getattr(other, f"{direction}_rank")
    query = r0 > 0
    delta = r0[query] - r1[query]  # > 0: improved
    improved, worsened = int((delta > 0).sum()), int((delta < 0).sum())
    return Change(int(query.sum()), improved, worsened, int(query.sum()) - improved - worsened)


def save_outcomes(path: str | os.PathLike, out: QueryOutcomes) -> None:
    """One .npz of the arrays (and the directions), written atomically."""
    arrays = {k: v for k, v in asdict(out).items() if k != "directions"}
    with atomic_open(path, "wb") as f:
        np.savez(f, directions=np.array(out.directions, dtype=str), **arrays)


def load_outcomes(path: str | os.PathLike) -> QueryOutcomes:
    with np.load(path, allow_pickle=False) as z:
        fields = {k: z[k] for k in z.files if k != "directions"}
        return QueryOutcomes(**fields, directions=tuple(str(d) for d in z["directions"]))
