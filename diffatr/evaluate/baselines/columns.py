"""Per-column statistics of a similarity matrix, computed in one blocked pass over its rows.

Reads: similarity rows on demand (a `Scores` direction, e.g. `CosineScores.t2a`). Writes
nothing. The baselines normalise each gallery item (a column of S) over a set of queries (the
rows); these passes visit the rows `max_elements` entries at a time, so the whole matrix never
exists, and the result is reused for every block of queries that is re-ranked later.

    S_qj     similarity of row q (a query) and column j (a gallery item)
    lse_j    log sum_q exp(scale * S_qj), accumulated in float64 with log-sum-exp
    hit_j    True when column j is among the top-k columns of at least one row
"""

from collections.abc import Callable

import torch

from ..ranks import rows_per_chunk

# (first row, stop row) -> S rows (b, Nc)
Rows = Callable[[int, int], torch.Tensor]


def column_logsumexp(
    rows: Rows, n_rows: int, n_cols: int, scale: float, max_elements: int
) -> torch.Tensor:
    """lse_j = log sum_q exp(scale * S_qj) over all n_rows rows: (Nc,) float64."""
    if n_rows < 1:
        raise ValueError("a column statistic over no rows is undefined")
    step = rows_per_chunk(n_cols, max_elements)
    lse = None
    for start in range(0, n_rows, step):
        block = rows(start, min(n_rows, start + step)).double()  # (b, Nc)
        part = torch.logsumexp(scale * block, dim=0)  # (Nc,)
        lse = part if lse is None else torch.logaddexp(lse, part)
    return lse


def column_hits(rows: Rows, n_rows: int, n_cols: int, k: int, max_elements: int) -> torch.Tensor:
    """hit_j: column j is in the top-k of some row, ties broken by column order: (Nc,) bool."""
    step = rows_per_chunk(n_cols, max_elements)
    hit = None
    for start in range(0, n_rows, step):
        block = rows(start, min(n_rows, start + step))  # (b, Nc)
        if hit is None:
            hit = torch.zeros(n_cols, dtype=torch.bool, device=block.device)
        if k == 1:
            best = block.argmax(dim=1)  # the first maximum: the rank-1 item under the tie rule
        else:
            best = torch.sort(block, dim=1, descending=True, stable=True).indices[:, :k]
        hit[best.reshape(-1)] = True
    if hit is None:
        raise ValueError("an activation set of no rows is undefined")
    return hit


def split_logsumexp(cosine, scale: float, max_elements: int) -> dict[str, torch.Tensor]:
    """lse_j over the evaluated split's own queries, per direction: {"t2a": (Na,), "a2t": (Nt,)}
    (t2a: each clip's column over all captions; a2t: each caption's column over all clips)."""
    na, nt = cosine.n_audio, cosine.n_text
    return {
        "t2a": column_logsumexp(cosine.t2a, nt, na, scale, max_elements),
        "a2t": column_logsumexp(cosine.a2t, na, nt, scale, max_elements),
    }
