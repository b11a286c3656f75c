"""The rank of each query's ground truth, computed over similarity rows in bounded chunks.

Reads: a `Scores` (see similarity.py) and the caption -> clip index. Writes nothing.

Ranks are 1-based over the full gallery. Ties are broken by gallery order, as a stable sort
by descending score would: rank = 1 + #(s > s*) + #(s == s* and index < index*). Counting
instead of sorting keeps the work at one comparison per (query, candidate), with at most
`max_elements` similarity entries alive at once.
"""

import torch
from tqdm import tqdm

from ..errors import UserError
from .similarity import Scores


def _rank_of(block: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-based rank of column target[i] within row i of block (R, M) under the tie rule."""
    s_true = block.gather(1, target[:, None])  # (R, 1)
    higher = (block > s_true).sum(1)
    equal = block == s_true  # (R, M)
    tied = (equal.sum(1) > 1).nonzero().squeeze(1)
    before = torch.zeros_like(higher)
    if tied.numel():
        columns = torch.arange(block.shape[1], device=block.device)
        before[tied] = (equal[tied] & (columns < target[tied, None])).sum(1)
    return 1 + higher + before


def _check_finite(block: torch.Tensor, direction: str, start: int) -> None:
    bad = ~torch.isfinite(block).all(1)
    if bad.any():
        row = start + int(bad.nonzero()[0])
        raise UserError(f"{direction} similarity row {row} holds NaN or Inf; the scores are broken")


def rows_per_chunk(gallery: int, max_elements: int) -> int:
    return max(1, max_elements // max(gallery, 1))


def t2a_ranks(
    scores: Scores,
    audio_index: torch.Tensor,
    max_elements: int = 1 << 24,
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
            labelled = target >= 0
            r = _rank_of(block, target.clamp_min(0))
            ranks[start : start + len(block)] = torch.where(labelled, r, 0).cpu()
            if best is not None:
                order = torch.sort(block, dim=1, descending=True, stable=True).indices
                best[start : start + len(block)] = order[:, : best.shape[1]].cpu()
            bar.update(len(block))
    return ranks, best


def a2t_ranks(
    scores: Scores, audio_index: torch.Tensor, max_elements: int = 1 << 24, progress: bool = False
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
            captions = order[lo:hi]
            for c0 in range(0, len(captions), step):
                c = captions[c0 : c0 + step]
                rows = block[(audio_index[c] - a0).to(block.device)]  # (c, Nt)
                ranks[c] = _rank_of(rows, c.to(block.device)).cpu()
    return ranks
