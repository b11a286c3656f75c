"""Both directions' ground-truth ranks from one pass over the rows of S (one matrix product).

Reads: a `Scores` whose a2t rows are the columns of its t2a rows (`a2t_is_transpose`: cosine,
a dense matrix) and the caption -> clip index. Writes nothing. Other scores (re-rankers score
each direction's top-k differently) go through ranks.py's two passes.

Each block of caption rows S[j0:j1] (b, Na) serves both directions:
  t2a  the rows' ranks, as ranks.py counts them;
  a2t  column i of every block holds clip i's query scores over all captions. The rank of
       caption j in its clip a's query is 1 + #{j': S[j', a] > s_j} + #{j' < j: S[j', a] == s_j}
       with s_j = S[j, a]. s_j is read from j's own block, which may come after the blocks
       that hold other captions' entries of column a, so each block keeps its *candidates*:
       the entries at or above a floor just under the lowest s_j of the column's captions
       (`pair_scores`, computed apart, minus a margin larger than the products' rounding).
       Once every s_j is known, the candidates give the exact counts. Candidates are few
       (about each clip's worst caption rank); past `max_elements` of them (a model that ranks
       nothing well) the a2t ranks fall back to ranks.py's pass over a2t rows.
Ties follow ranks.py's rule (gallery order), and the numbers do not depend on the block size.
"""

import torch

from ..progress import Progress as tqdm  # a bar on a terminal, plain lines in a log
from .ranks import (
    DEFAULT_MAX_ELEMENTS,
    _check_finite,
    _row_ranks,
    a2t_ranks,
    rows_per_chunk,
    t2a_ranks,
)
from .similarity import Scores

# Below the lowest ground-truth score of a column, entries cannot beat any of its captions.
# float32 products of unit vectors differ from a separate dot product by < 1e-5 at D = 4096.
FLOOR_MARGIN = 1e-4
# Candidates kept at most, per similarity entry a block may hold (12 bytes each): 2 -> 96 MB
# beside the default 16 MB blocks; past it the a2t ranks come from ranks.py's own pass.
CANDIDATE_BUDGET = 2


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


def joint_ranks(
    scores: Scores,
    audio_index: torch.Tensor,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(t2a ranks, a2t ranks), each (Nt,) as `t2a_ranks` and `a2t_ranks` give them."""
    nt, na = scores.n_text, scores.n_audio
    index = audio_index.cpu().to(torch.int64)
    labelled = (index >= 0).nonzero().squeeze(1)  # (L,) captions with a clip
    clip = index[labelled]  # (L,)
    pair_step = max(1, max_elements // 1024)
    approx = torch.cat(
        [
            scores.pair_scores(labelled[k : k + pair_step], clip[k : k + pair_step]).float().cpu()
            for k in range(0, len(labelled), pair_step)
        ]
        or [torch.zeros(0)]
    )  # (L,) s_j, computed apart from the blocks
    floor = torch.full((na,), torch.inf).scatter_reduce(
        0, clip, approx - FLOOR_MARGIN * approx.abs().clamp_min(1.0), "amin"
    )  # (Na,) the lowest s_j of each clip's captions, minus the margin; inf: no caption
    t2a = torch.zeros(nt, dtype=torch.int64)
    exact = torch.zeros(nt)  # s_j as the blocks hold it
    found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (caption, clip, score)
    n_found, budget = 0, CANDIDATE_BUDGET * max_elements
    step = rows_per_chunk(na, max_elements)
    with tqdm(total=nt, desc="both directions", unit="caption", disable=not progress,
              leave=False) as bar:  # fmt: skip
        for start in range(0, nt, step):
            block = scores.t2a(start, min(nt, start + step))  # (b, Na)
            _check_finite(block, "text-to-audio", start)
            stop = start + len(block)
            target = index[start:stop].to(block.device)
            t2a[start:stop] = _row_ranks(block, target).cpu()
            rows = (target >= 0).nonzero().squeeze(1)
            exact[start + rows.cpu()] = block[rows, target[rows]].float().cpu()
            if n_found <= budget:
                j, i = (block >= floor.to(block.device)).nonzero(as_tuple=True)  # candidates
                found.append(
                    ((start + j).int().cpu(), i.int().cpu(), block[j, i].float().cpu())
                )  # 12 bytes a candidate
                n_found += len(j)
            bar.update(len(block))
    if n_found > budget:
        del found
        return t2a, a2t_ranks(scores, audio_index, max_elements, progress)
    return t2a, _a2t_from_candidates(found, index, exact, nt, na)


def _a2t_from_candidates(found, index: torch.Tensor, exact: torch.Tensor, nt: int, na: int):
    """Exact a2t ranks from every column's candidates (all entries >= its floor)."""
    j = torch.cat([f[0] for f in found]).long()  # (C,) candidate caption
    i = torch.cat([f[1] for f in found]).long()  # (C,) its column (clip)
    v = torch.cat([f[2] for f in found])  # (C,) S[j, i]
    a2t = torch.zeros(nt, dtype=torch.int64)
    order = torch.argsort(index, stable=True)  # captions grouped by clip, in gallery order
    grouped = index[order]
    keep = grouped >= 0
    order, grouped = order[keep], grouped[keep]
    slot = torch.arange(len(grouped)) - torch.searchsorted(grouped, grouped)  # 0, 1, ... per clip
    for g in range(int(slot.max()) + 1 if len(slot) else 0):
        # The g-th caption of every clip that has one, against its column's candidates.
        caps, clips = order[slot == g], grouped[slot == g]
        s = torch.full((na,), torch.inf)
        s[clips] = exact[caps]  # (Na,) threshold per column; inf: no g-th caption
        who = torch.full((na,), -1, dtype=torch.int64)
        who[clips] = caps
        si = s[i]
        beats = (v > si) | ((v == si) & (j < who[i]))  # (C,)
        a2t[caps] = 1 + torch.bincount(i[beats], minlength=na)[clips]
    return a2t
