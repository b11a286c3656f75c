"""The rank of each query's ground truth, computed over similarity rows in bounded chunks.

Reads: a `Scores` (see similarity.py) and the caption -> clip index. Writes nothing.

Ranks are 1-based over the full gallery. Ties are broken by gallery order, as a stable sort
by descending score would: rank = 1 + #(s > s*) + #(s == s* and index < index*). Counting
instead of sorting keeps the work at one comparison per (query, candidate), with at most
`max_elements` similarity entries alive at once.
"""

import torch

from ..errors import UserError
from ..progress import Progress as tqdm  # a bar on a terminal, plain lines in a log
from .similarity import Scores

# Similarity entries alive at once (4 bytes each): 16 MB blocks. Measured at 50k x 10k on 2 cores
# (bench/bench_evaluate.py): faster than 4 MB blocks (per-chunk overhead) and than 64 MB blocks
# (cache misses while each block is compared twice).
DEFAULT_MAX_ELEMENTS = 1 << 22


def _rank_of(block: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-based rank of column target[i] within row i of block (R, M) under the tie rule."""
    s_true = block.gather(1, target[:, None])  # (R, 1)
    # sum(dtype=int32) of a bool mask: ~7x faster on CPU than count_nonzero(dim=1), which
    # widens every entry to int64 first.
    higher = (block > s_true).sum(1, dtype=torch.int32)
    equal = (block == s_true).sum(1, dtype=torch.int32)  # >= 1: the target itself
    return _rank_from_counts(block, target, s_true, higher, equal)


def _rank_from_counts(
    block: torch.Tensor,
    target: torch.Tensor,
    s_true: torch.Tensor,
    higher: torch.Tensor,
    equal: torch.Tensor,
) -> torch.Tensor:
    """`_rank_of` from each row's #(s > s*) and #(s == s*) (R,), s_true (R, 1): the ties the
    target's column order settles are counted only in rows where another entry equals s*."""
    tied = (equal > 1).nonzero().squeeze(1)
    rank = 1 + higher.long()
    if tied.numel():
        columns = torch.arange(block.shape[1], device=block.device)
        rows = block[tied]  # (T, M): only rows where another candidate ties the target
        rank[tied] += torch.count_nonzero(
            (rows == s_true[tied]) & (columns < target[tied, None]), 1
        )
    return rank


def _row_ranks(block: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rank of column target[i] within row i of block (R, M); 0 where target[i] is -1."""
    rows = (target >= 0).nonzero().squeeze(1)
    out = torch.zeros(len(block), dtype=torch.int64, device=block.device)
    if len(rows):
        out[rows] = _rank_of(block[rows] if len(rows) < len(block) else block, target[rows])
    return out


def _check_finite(block: torch.Tensor, direction: str, start: int) -> None:
    # NaN/Inf reach the row sums, so one cheap reduction clears the common case; the exact
    # element-wise test runs only when a sum is not finite (or overflowed).
    if torch.isfinite(block.sum(1)).all():
        return
    bad = ~torch.isfinite(block).all(1)
    if bad.any():
        row = start + int(bad.nonzero()[0])
        raise UserError(f"{direction} similarity row {row} holds NaN or Inf; the scores are broken")


def rows_per_chunk(gallery: int, max_elements: int) -> int:
    return max(1, max_elements // max(gallery, 1))


def t2a_ranks(
    scores: Scores,
    audio_index: torch.Tensor,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    top: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rank of each caption's clip among all clips: (Nt,) int64, 0 where audio_index is -1.

    With top > 0 also return the `top` best clip rows of every caption (Nt, top), in rank order.
    """
    nt, na = scores.n_text, scores.n_audio
    ranks = torch.zeros(nt, dtype=torch.int64)
    best = torch.zeros((nt, min(top, na)), dtype=torch.int64) if top else None
    step = rows_per_chunk(na, max_elements)
    with tqdm(total=nt, desc="text->audio", unit="query", disable=not progress, leave=False) as bar:
        for start in range(0, nt, step):
            block = scores.t2a(start, min(nt, start + step))  # (b, Na)
            _check_finite(block, "text-to-audio", start)
            target = audio_index[start : start + len(block)].to(block.device)
            ranks[start : start + len(block)] = _row_ranks(block, target).cpu()
            if best is not None:
                order = torch.sort(block, dim=1, descending=True, stable=True).indices
                best[start : start + len(block)] = order[:, : best.shape[1]].cpu()
            bar.update(len(block))
    return ranks, best


def a2t_ranks(
    scores: Scores,
    audio_index: torch.Tensor,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    progress: bool = False,
) -> torch.Tensor:
    """Rank of each caption within the ranking of its own clip's query: (Nt,), 0 if no clip.

    A clip's ground truth is all its captions; audio-to-text metrics combine their ranks.
    """
    nt, na = scores.n_text, scores.n_audio
    ranks = torch.zeros(nt, dtype=torch.int64)
    audio_index = audio_index.cpu()
    order = torch.argsort(audio_index, stable=True)  # captions grouped by clip
    grouped = audio_index[order].contiguous()
    step = rows_per_chunk(nt, max_elements)
    with tqdm(total=na, desc="audio->text", unit="query", disable=not progress, leave=False) as bar:
        for a0 in range(0, na, step):
            a1 = min(na, a0 + step)
            lo, hi = torch.searchsorted(grouped, torch.tensor([a0, a1])).tolist()
            bar.update(a1 - a0)
            if lo == hi:
                continue  # no clip in this chunk has a caption: nothing to rank
            block = scores.a2t(a0, a1)  # (b, Nt)
            _check_finite(block, "audio-to-text", a0)
            captions = order[lo:hi].to(block.device)
            clip_rows = (grouped[lo:hi] - a0).to(block.device)  # (n,) row of each caption's clip
            slot = torch.arange(hi - lo, device=block.device) - torch.searchsorted(
                clip_rows, clip_rows
            )  # 0, 1, ... among the clip's captions
            ranks[captions.cpu()] = _ranks_in_rows(block, captions, clip_rows, slot).cpu()
    return ranks


# A row's candidates (entries at or above its lowest ground-truth score) are usually a few
# percent of it; past this share, comparing whole rows once per caption slot is cheaper.
CANDIDATE_SHARE = 0.125


def _ranks_in_rows(
    block: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor, slot: torch.Tensor
) -> torch.Tensor:
    """Rank of column cols[n] within row rows[n] of block (R, M) under the tie rule, for
    targets that share rows (slot[n]: 0, 1, ... among its row's targets).

    One comparison per entry finds each row's candidates, the entries at or above its lowest
    target score; only they can rank above a target, so the per-target counts run over them."""
    n_slots = int(slot.max()) + 1
    if not block.is_floating_point():  # no inf to mark rows without a target
        return _ranks_by_slot(block, cols, rows, slot, n_slots)
    s_true = block[rows, cols]  # (n,)
    floor = torch.full((len(block),), torch.inf, device=block.device, dtype=block.dtype)
    floor = floor.scatter_reduce(0, rows, s_true, "amin")  # (R,) inf: a row with no target
    mask = block >= floor[:, None]  # (R, M)
    if int(torch.count_nonzero(mask)) > CANDIDATE_SHARE * mask.numel():
        return _ranks_by_slot(block, cols, rows, slot, n_slots)
    r, c = mask.nonzero(as_tuple=True)  # (C,) candidates, row-major
    v = block[r, c]
    out = torch.empty(len(cols), dtype=torch.int64, device=block.device)
    for g in range(n_slots):
        # The g-th target of every row that has one, against its row's candidates.
        sel = slot == g
        t = torch.full_like(floor, torch.inf)
        t[rows[sel]] = s_true[sel]
        tc = torch.full((len(block),), -1, dtype=torch.int64, device=block.device)
        tc[rows[sel]] = cols[sel]
        tr = t[r]
        beats = (v > tr) | ((v == tr) & (c < tc[r]))  # (C,)
        out[sel] = 1 + torch.bincount(r[beats], minlength=len(block))[rows[sel]]
    return out


def _ranks_by_slot(block, cols, rows, slot, n_slots: int) -> torch.Tensor:
    """The same ranks by whole-row comparisons, one pass per slot (for rows of many ties)."""
    out = torch.empty(len(cols), dtype=torch.int64, device=block.device)
    for g in range(n_slots):
        # The g-th target of every row that has one: compare whole rows in place, copying
        # rows only when some row lacks a g-th target.
        sel = slot == g
        r = rows[sel]
        part = block if len(r) == len(block) else block[r]
        out[sel] = _rank_of(part, cols[sel])
    return out
