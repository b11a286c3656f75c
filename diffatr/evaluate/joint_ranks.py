"""Both directions' ground-truth ranks from one pass over the rows of S (one matrix product).

Reads: a `Scores` whose a2t rows are the columns of its t2a rows (`a2t_is_transpose`: cosine,
a dense matrix) and the caption -> clip index. Writes nothing. Other scores (re-rankers score
each direction's top-k differently) go through ranks.py's two passes.

Notation: j a caption, a a clip, j_g(a) the g-th caption of clip a in gallery order (slot g),
s_j = S[j, a] for j's own clip a (the value j's block holds), t_j the same score computed apart
(`pair_scores`: it may differ from s_j by the products' rounding), [lo, hi] = t_j -/+ margin.

Each block of caption rows S[j0:j1] (b, Na) is read once (block_counts.py) for both directions
(clips with more than `SLOTS` captions add one read per `SLOTS` slots):
  t2a  each row's #(> s_j) and #(== s_j), as ranks.py counts them;
  a2t  column a of every block holds clip a's query scores over all captions; j = j_g(a) ranks
       1 + #{j': S[j', a] > s_j} + #{j' < j: S[j', a] == s_j}. s_j is known only once j's own
       block is read, so every block counts, for every slot g of every clip, the entries
       above  > hi: they beat s_j (hi >= s_j), counted exactly wherever s_j is;
       band   in [lo, hi]: almost always just j's own entry. Where a block holds another,
              its column's band entries are kept and compared with s_j once every s_j is
              known (ties by gallery order). Entries below lo never beat s_j.
The counts are exact when every s_j lies in its band, which is checked at the end; if one does
not (rounding beyond the margin), or the kept entries outgrow their budget (scores full of ties),
the a2t ranks come from ranks.py's pass over a2t rows. Ties follow ranks.py's rule (gallery
order), and the numbers do not depend on the block size.
"""

import torch

from ..progress import Progress as tqdm  # a bar on a terminal, plain lines in a log
from .block_counts import SLOTS, block_counts
from .ranks import (
    DEFAULT_MAX_ELEMENTS,
    _check_finite,
    _rank_from_counts,
    a2t_ranks,
    rows_per_chunk,
    t2a_ranks,
)
from .similarity import Scores

# The band's half-width, relative to max(1, |t_j|). float32 products of unit vectors differ
# from a separate dot product by < 2e-7 at D = 512 and 4096 (measured); a wider band only
# keeps more entries. A caption whose s_j falls outside sends a2t to the two-pass fallback.
BAND_MARGIN = 2e-6
# Band entries kept at most, per similarity entry a block may hold (16 bytes each): 1.5 -> 96 MB
# beside the default 16 MB blocks; past it the a2t ranks come from ranks.py's own pass.
BAND_BUDGET = 1.5


def paper_ranks(
    scores: Scores,
    audio_index: torch.Tensor,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(t2a ranks, a2t ranks): one pass where the scores allow it, else ranks.py's two."""
    if getattr(scores, "a2t_is_transpose", False) and _floating(scores):
        return joint_ranks(scores, audio_index, max_elements, progress)
    t2a, _ = t2a_ranks(scores, audio_index, max_elements, progress=progress)
    return t2a, a2t_ranks(scores, audio_index, max_elements, progress)


def _floating(scores: Scores) -> bool:
    return scores.n_text == 0 or scores.t2a(0, 1).is_floating_point()


def caption_slots(index: torch.Tensor, na: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(slot (Nt,): g of caption j among its clip's captions in gallery order, -1 without a
    clip; who (G, Na): j_g(a), -1 where clip a has no g-th caption), G a multiple of SLOTS."""
    order = torch.argsort(index, stable=True)  # captions grouped by clip, in gallery order
    grouped = index[order]
    keep = grouped >= 0
    order, grouped = order[keep], grouped[keep]
    g = torch.arange(len(grouped)) - torch.searchsorted(grouped, grouped)  # 0, 1, ... per clip
    n_slots = -(-(int(g.max()) + 1 if len(g) else 1) // SLOTS) * SLOTS
    slot = torch.full_like(index, -1)
    slot[order] = g
    who = torch.full((n_slots, na), -1, dtype=torch.int64)
    who[g, grouped] = order
    return slot, who


def joint_ranks(
    scores: Scores,
    audio_index: torch.Tensor,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(t2a ranks, a2t ranks), each (Nt,) as `t2a_ranks` and `a2t_ranks` give them."""
    nt, na = scores.n_text, scores.n_audio
    index = audio_index.cpu().to(torch.int64)
    slot, who = caption_slots(index, na)  # (Nt,), (G, Na)
    labelled = (index >= 0).nonzero().squeeze(1)  # (L,)
    t = _pair_scores(scores, labelled, index[labelled], max_elements)  # (L,) t_j
    margin = BAND_MARGIN * t.abs().clamp_min(1.0)
    lo = torch.full(who.shape, torch.inf, dtype=t.dtype)  # (G, Na) inf: no g-th caption
    hi = lo.clone()
    lo[slot[labelled], index[labelled]] = t - margin
    hi[slot[labelled], index[labelled]] = t + margin
    t2a = torch.zeros(nt, dtype=torch.int64)
    exact = torch.zeros(nt, dtype=torch.float64)  # s_j as the blocks hold it (any float: exact)
    above = torch.zeros(who.shape, dtype=torch.int64)  # (G, Na) entries > hi, all blocks
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # band (caption, clip, S)
    n_kept, budget = 0, BAND_BUDGET * max_elements
    step = rows_per_chunk(na, max_elements)
    with tqdm(total=nt, desc="both directions", unit="caption", disable=not progress,
              leave=False) as bar:  # fmt: skip
        for start in range(0, nt, step):
            block = scores.t2a(start, min(nt, start + step))  # (b, Na)
            _check_finite(block, "text-to-audio", start)
            stop = start + len(block)
            if start == 0:
                lo, hi = lo.to(block.device, block.dtype), hi.to(block.device, block.dtype)
                above = above.to(block.device)
            target = index[start:stop].to(block.device)
            mine = target >= 0
            s = torch.where(mine, block.gather(1, target.clamp_min(0)[:, None])[:, 0], torch.inf)
            exact[start:stop] = s.cpu().double()
            g_own, a_own = slot[start:stop][mine.cpu()].to(block.device), target[mine]
            flagged = torch.zeros(na, dtype=torch.bool, device=block.device)
            for g0 in range(0, len(who), SLOTS):
                higher, equal, up, least = (
                    x.to(block.device)
                    for x in block_counts(block, s, lo[g0 : g0 + SLOTS], hi[g0 : g0 + SLOTS])
                )
                if g0 == 0:
                    rank = _rank_from_counts(block, target.clamp_min(0), s[:, None], higher, equal)
                    t2a[start:stop] = torch.where(mine, rank, 0).cpu()
                above[g0 : g0 + SLOTS] += up
                band = least - up  # (SLOTS, Na) entries in [lo, hi]
                here = (g_own >= g0) & (g_own < g0 + SLOTS)
                band[g_own[here] - g0, a_own[here]] -= 1  # j's own (inside: checked at the end)
                flagged |= (band > 0).any(0)  # the column holds a band entry besides j's own
            if n_kept <= budget and bool(flagged.any()):
                found = _band_entries(block, flagged.nonzero().squeeze(1), lo, hi)
                kept.append((found[0] + start, found[1], found[2]))
                n_kept += len(found[0])
            bar.update(len(block))
    if n_kept > budget or not _inside_bands(exact, who, lo.cpu(), hi.cpu()):
        del kept
        return t2a, a2t_ranks(scores, audio_index, max_elements, progress)
    return t2a, _a2t_ranks(above.cpu(), kept, exact, who, lo.cpu(), hi.cpu(), nt)


def _pair_scores(scores: Scores, rows: torch.Tensor, clips: torch.Tensor, max_elements: int):
    step = max(1, max_elements // 1024)
    parts = [
        scores.pair_scores(rows[k : k + step], clips[k : k + step]).cpu()
        for k in range(0, len(rows), step)
    ]
    return torch.cat(parts) if parts else torch.zeros(0)


def _band_entries(block: torch.Tensor, cols: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """(row, clip, S) of the entries of block's columns `cols` in some slot's band, on the CPU."""
    sub = block[:, cols]  # (b, F)
    inside = torch.zeros(sub.shape, dtype=torch.bool, device=block.device)
    for g in range(len(lo)):
        inside |= (sub >= lo[g, cols]) & (sub <= hi[g, cols])
    r, c = inside.nonzero(as_tuple=True)
    return r.int().cpu(), cols[c].int().cpu(), sub[r, c].cpu().double()


def _inside_bands(exact: torch.Tensor, who: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Whether every caption's s_j lies in its band (so `above` and the kept entries are exact)."""
    has = who >= 0
    s = exact[who[has]]
    return bool(((s >= lo[has].double()) & (s <= hi[has].double())).all())


def _a2t_ranks(above, kept, exact, who, lo, hi, nt: int) -> torch.Tensor:
    """Each caption's a2t rank: 1 + its entries above hi + its band entries that beat s_j."""
    j = torch.cat([k[0] for k in kept] or [torch.zeros(0, dtype=torch.int32)]).long()  # (K,)
    a = torch.cat([k[1] for k in kept] or [torch.zeros(0, dtype=torch.int32)]).long()  # (K,)
    v = torch.cat([k[2] for k in kept] or [torch.zeros(0, dtype=torch.float64)])  # (K,) S[j, a]
    a2t = torch.zeros(nt, dtype=torch.int64)
    na = who.shape[1]
    for g in range(len(who)):
        has = who[g] >= 0  # (Na,)
        s = torch.where(has, exact[who[g].clamp_min(0)], torch.inf)[a]  # (K,) s_{j_g(a)}
        inside = (v >= lo[g, a].double()) & (v <= hi[g, a].double())
        beats = inside & ((v > s) | ((v == s) & (j < who[g, a])))
        beats_in_band = torch.bincount(a[beats], minlength=na)  # (Na,)
        a2t[who[g, has]] = 1 + above[g, has] + beats_in_band[has]
    return a2t
