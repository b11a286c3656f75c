"""Retrieval metrics of the two protocols of method.md, from ground-truth ranks.

Reads: a `Scores` (similarity rows on demand) and the caption -> clip index (-1: no clip).
Writes nothing. All R@k and mAP@10 values are percentages.

Paper protocol (Mei et al.), both directions over the full gallery:
  t2a: each caption queries the clips; r = rank of its clip.
       R@k = % of queries with r <= k; mAP@10 = mean(1/r if r <= 10 else 0);
       medR = floor(median(r - 1)) + 1; meanR = mean(r).
  a2t: each clip with captions queries all captions; r_1 <= r_2 <= ... are the ranks of its G
       captions. R@k, medR, meanR use r_1; AP@10 = (1/G) * sum_{i: r_i <= 10} i / r_i.
DCASE protocol (Task 6b): t2a only, plus a jackknife 95% interval for mAP@10.
"""

import numpy as np
import torch

from .dcase import jackknife_interval
from .joint_ranks import paper_ranks
from .ranks import DEFAULT_MAX_ELEMENTS, t2a_ranks
from .similarity import Scores

RECALL_AT = (1, 5, 10)
METRICS = ("R@1", "R@5", "R@10", "mAP@10", "medR", "meanR")


def _summary(prefix: str, best: np.ndarray, ap: np.ndarray) -> dict[str, float]:
    """Metrics from each query's best ground-truth rank and its AP@10 (a fraction)."""
    out = {f"{prefix}R@{k}": 100.0 * float(np.mean(best <= k)) for k in RECALL_AT}
    out[f"{prefix}mAP@10"] = 100.0 * float(np.mean(ap))
    out[f"{prefix}medR"] = float(np.floor(np.median(best - 1)) + 1)
    out[f"{prefix}meanR"] = float(np.mean(best))
    return out


def t2a_average_precision(ranks: np.ndarray) -> np.ndarray:
    """AP@10 of each caption query with one relevant clip: 1/r if r <= 10 else 0."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= 10, 1.0 / ranks, 0.0)


def t2a_metrics(ranks: np.ndarray) -> dict[str, float]:
    """Text-to-audio metrics from the ranks of labelled caption queries (all > 0)."""
    ranks = np.asarray(ranks, dtype=np.int64)
    return _summary("t2a_", ranks, t2a_average_precision(ranks))


def a2t_metrics(caption_ranks: np.ndarray, audio_index: np.ndarray) -> dict[str, float]:
    """Audio-to-text metrics; caption_ranks[j] is caption j's rank in its clip's query.

    Captions with audio_index -1 are ignored; clips with no caption are not queries.
    """
    labelled = np.asarray(audio_index) >= 0
    clip = np.asarray(audio_index)[labelled]
    r = np.asarray(caption_ranks, dtype=np.int64)[labelled]
    order = np.lexsort((r, clip))  # by clip, then rank
    clip, r = clip[order], r[order]
    starts = np.flatnonzero(np.r_[True, clip[1:] != clip[:-1]])  # first caption of each clip
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(clip)]))
    i = np.arange(len(clip)) - starts[group] + 1  # 1-based order among the clip's captions
    precision = np.where(r <= 10, i / r, 0.0)
    n_captions = np.bincount(group)  # G per clip
    ap = np.bincount(group, weights=precision) / n_captions
    return _summary("a2t_", r[starts], ap)


def _labelled_ranks(ranks: torch.Tensor, audio_index: torch.Tensor) -> np.ndarray:
    labelled = audio_index.cpu() >= 0
    if not labelled.any():
        raise ValueError("no caption has a clip (audio_index is -1 everywhere): nothing to score")
    return ranks[labelled].numpy()


def paper_protocol(
    scores: Scores,
    audio_index: torch.Tensor,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    progress: bool = False,
) -> dict[str, float]:
    """Both directions, Mei et al.'s definitions (see the module docstring)."""
    t2a, a2t = paper_ranks(scores, audio_index, max_elements, progress)
    return paper_from_ranks(t2a, a2t, audio_index)


def paper_from_ranks(
    t2a: torch.Tensor, a2t: torch.Tensor, audio_index: torch.Tensor
) -> dict[str, float]:
    """The paper protocol's metrics from ranks already computed by `t2a_ranks`/`a2t_ranks`."""
    return {
        **t2a_metrics(_labelled_ranks(t2a, audio_index)),
        **a2t_metrics(a2t.cpu().numpy(), audio_index.cpu().numpy()),
    }


def dcase_protocol(
    scores: Scores,
    audio_index: torch.Tensor,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    top: int = 0,
    progress: bool = False,
) -> tuple[dict[str, float], torch.Tensor | None]:
    """Text-to-audio metrics with a jackknife 95% interval for mAP@10 (percent).

    Captions without a clip are ranked (for the submission's `top` list) but not scored.
    Returns the metrics and, with top > 0, the best `top` clip rows of every caption.
    """
    ranks, best = t2a_ranks(scores, audio_index, max_elements, top=top, progress=progress)
    labelled = _labelled_ranks(ranks, audio_index)
    metrics = t2a_metrics(labelled)
    low, high = jackknife_interval(100.0 * t2a_average_precision(labelled))
    metrics["t2a_mAP@10_ci_low"], metrics["t2a_mAP@10_ci_high"] = low, high
    return metrics, best
