"""Recall@k curves (k = 1..100 by default) of the paper protocol, from ground-truth ranks.

Reads: a `Scores` and the caption -> clip index. Writes nothing (plots.py draws the curves).
The ranks are the ones `paper_protocol` computes (ranks.py), so R@1, R@5 and R@10 of a curve
are the protocol's numbers: t2a counts each labelled caption query by the rank of its clip;
a2t counts each clip with captions by its best-ranked caption. Values are percentages.
"""

from collections.abc import Iterable

import numpy as np
import torch

from .joint_ranks import paper_ranks
from .ranks import DEFAULT_MAX_ELEMENTS
from .similarity import Scores


def _recall(best: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """% of queries whose best rank is <= k, for each k: (len(ks),) float64."""
    return 100.0 * np.searchsorted(np.sort(best), ks, side="right") / len(best)


def recall_from_ranks(
    t2a: torch.Tensor, a2t: torch.Tensor, audio_index: torch.Tensor, ks: Iterable[int]
) -> dict[str, np.ndarray]:
    """Curves from ranks already computed by `t2a_ranks` and `a2t_ranks` (each (Nt,))."""
    ks = np.asarray(list(ks), dtype=np.int64)
    if ks.ndim != 1 or not len(ks) or ks.min() < 1:
        raise ValueError("ks must be a non-empty sequence of ranks >= 1")
    index = audio_index.cpu().numpy()
    labelled = index >= 0
    if not labelled.any():
        raise ValueError("no caption has a clip (audio_index is -1 everywhere): nothing to score")
    clip, r = index[labelled], a2t.cpu().numpy()[labelled]
    best = np.full(int(clip.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(best, clip, r)  # each clip's best-ranked caption
    return {
        "t2a": _recall(t2a.cpu().numpy()[labelled], ks),
        "a2t": _recall(best[np.unique(clip)], ks),
    }


def recall_curve(
    scores: Scores,
    audio_index: torch.Tensor,
    ks: Iterable[int] = range(1, 101),
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """{"t2a": R@k, "a2t": R@k} in percent, one value per k of `ks`, paper protocol."""
    t2a, a2t = paper_ranks(scores, audio_index, max_elements, progress)
    return recall_from_ranks(t2a, a2t, audio_index, ks)
