"""Top-k re-ranking as a `Scores`: cosine rows whose top-k entries a re-ranker re-scores.

Reads nothing, writes nothing. Every re-ranker of the project (the diffusion head, the
inference-time baselines, the co-attention head) takes each query's cosine top-k and scores
those pairs again (method.md, "Inference: re-ranking and fusion"); this module owns what they
share, so all of them get both protocols, bounded memory and block-size independence at once.

    S        cosine similarity rows of a block of queries, (b, Nc)
    top      each row's top-k candidates by S, (b, k), in ranking order: the first k of a
             stable descending sort, so ties go to the lower gallery index as in ranks.py;
             None when k covers the whole gallery
    w        the re-ranker's scores of those pairs, (b, k)
    fusion   S' = S + alpha * w on the top-k, S elsewhere (w >= 0 keeps the top-k on top)
    replace  S' = 2 + w - min(0, min_row w) on the top-k, S elsewhere: every re-scored entry
             lies above every cosine (<= 1), so the top-k stays on top, ordered by w alone
"""

from collections.abc import Callable

import torch

from ..compiling import compile_settings
from ..progress import warn
from ..threads import ranking_threads, tick
from .similarity import CosineScores

COMBINE = ("fusion", "replace")

# (direction "t2a" | "a2t", first query row, S (b, Nc), top (b, k) or None) -> w (b, k)
Rescorer = Callable[[str, int, torch.Tensor, torch.Tensor | None], torch.Tensor]


def topk_indices(S: torch.Tensor, k: int) -> torch.Tensor:
    """The first k columns of each row of S (b, Nc) under a stable descending sort, (b, k).

    The ranking rule of ranks.py (ties by gallery order). `torch.topk` alone may keep either of
    two tied candidates at the k-th place, so a ground truth at cosine rank k could leave the
    top-k; it only finds the k-th value here, and rows with a tie across it are sorted whole.
    """
    idx = S.topk(k, dim=1).indices.sort(dim=1).values  # (b, k) the set, in gallery order
    order = torch.sort(S.gather(1, idx), dim=1, descending=True, stable=True).indices
    top = idx.gather(1, order)  # (b, k) descending, ties by gallery order
    kth = S.gather(1, top[:, -1:])  # (b, 1)
    crossed = torch.count_nonzero(kth <= S, dim=1) > k  # a tie across the k-th place
    if crossed.any():
        rows = S[crossed]  # (t, Nc)
        top[crossed] = torch.sort(rows, dim=1, descending=True, stable=True).indices[:, :k]
    return top


def warn_if_topk_covers(topk: int | None, n_audio: int, n_text: int) -> None:
    """Warn when --topk K is at least a direction's gallery: all of it is re-ranked there."""
    covered = [
        f"the {n} {what}"
        for n, what in ((n_audio, "clips"), (n_text, "captions"))
        if topk and topk >= n
    ]
    if covered:
        warn(
            f"--topk {topk} is at least the gallery size ({' and '.join(covered)}): the whole "
            "gallery is re-ranked, as with --topk all"
        )


class TopKScores:
    """`cosine`'s rows with each query's top-`topk` re-scored by `rescore`, `query_block` rows
    at a time (None: the whole gallery is re-scored)."""

    def __init__(
        self,
        cosine: CosineScores,
        rescore: Rescorer,
        topk: int | None = 32,
        combine: str = "fusion",
        alpha: float = 1.0,
        query_block: int = 64,
    ):
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}, not {combine!r}")
        if topk is not None and topk < 1:
            raise ValueError(f"top-k must be at least 1 (or all), got {topk}")
        self.cosine, self.rescore = cosine, rescore
        self.topk, self.combine, self.alpha, self.query_block = topk, combine, alpha, query_block
        self.n_text, self.n_audio = cosine.n_text, cosine.n_audio

    def compiles(self) -> bool:
        """Whether `rescore` runs torch.compile'd code."""
        return False

    def t2a(self, start: int, stop: int) -> torch.Tensor:
        return self._rerank("t2a", self.cosine.t2a(start, stop), start)

    def a2t(self, start: int, stop: int) -> torch.Tensor:
        return self._rerank("a2t", self.cosine.a2t(start, stop), start)

    @torch.no_grad()
    def _rerank(self, direction: str, S: torch.Tensor, first_row: int) -> torch.Tensor:
        out = S.clone()
        # one thread while another process holds a core; compiled kernels for any count
        with ranking_threads(), compile_settings(self.compiles(), ranking=True):
            for s in range(0, len(S), self.query_block):
                self._block(direction, out[s : s + self.query_block], first_row + s)
                tick()
        return out

    def _block(self, direction: str, S: torch.Tensor, row0: int) -> None:
        """Re-score each row's top-k of S (b, Nc) and write S' into S in place."""
        n_cand = S.shape[1]
        k = n_cand if self.topk is None else min(self.topk, n_cand)
        top = None if k == n_cand else topk_indices(S, k)  # (b, k)
        w = self.rescore(direction, row0, S, top).to(S.dtype)  # (b, k)
        if self.combine == "fusion":
            S.add_(self.alpha * w) if top is None else S.scatter_add_(1, top, self.alpha * w)
            return
        w = 2.0 + w - w.amin(dim=1, keepdim=True).clamp(max=0.0)
        S.copy_(w) if top is None else S.scatter_(1, top, w)
