"""One evaluation of a ranking for the ablation records: the protocol's metrics and R@k curves.

Reads a `Scores` and the caption -> clip index; writes nothing. The ranks are counted once and
give both the metrics and the recall curves (k = 1..100) that the pictures draw.
"""

from pathlib import Path

import torch

from ..evaluate import dcase_protocol
from ..evaluate.curves import recall_from_ranks
from ..evaluate.dcase2025 import dcase2025_protocol
from ..evaluate.joint_ranks import paper_ranks
from ..evaluate.metrics import paper_from_ranks
from ..evaluate.per_query import RecordingScores, save_outcomes
from ..evaluate.similarity import Scores

CURVE_KS = range(1, 101)
REPORT_TOP = 5  # candidates per query kept for the per-query report


def measure(
    scores: Scores,
    audio_index: torch.Tensor,
    protocol: str,
    progress: bool = False,
    record: Path | None = None,
) -> dict:
    """{"metrics": the protocol's metrics (percent), "curves": {"t2a", "a2t"}: R@1..R@100}.

    With `record`, each query's rank and top 5 also go to that .npz (for `ablate --report`)."""
    if record is not None:
        scores = RecordingScores(scores, audio_index, REPORT_TOP)
    result = _measure(scores, audio_index, protocol, progress)
    if record is not None:
        save_outcomes(record, scores.outcomes())
    return result


def _measure(scores: Scores, audio_index: torch.Tensor, protocol: str, progress: bool) -> dict:
    if protocol == "dcase":
        metrics, _ = dcase_protocol(scores, audio_index, progress=progress)
        return {"metrics": metrics}
    if protocol == "dcase2025":  # each caption's own clip: the split has no relevance file
        return {"metrics": dcase2025_protocol(scores, audio_index)}
    t2a, a2t = paper_ranks(scores, audio_index, progress=progress)
    curves = recall_from_ranks(t2a, a2t, audio_index, CURVE_KS)
    return {
        "metrics": paper_from_ranks(t2a, a2t, audio_index),
        "curves": {d: [round(float(v), 4) for v in c] for d, c in curves.items()},
    }
