"""One evaluation of a ranking for the ablation records: the protocol's metrics and R@k curves.

Reads a `Scores` and the caption -> clip index; writes nothing. The ranks are counted once and
give both the metrics and the recall curves (k = 1..100) that the pictures draw.
"""

import torch

from ..evaluate import dcase_protocol, t2a_ranks
from ..evaluate.curves import recall_from_ranks
from ..evaluate.dcase2025 import dcase2025_protocol
from ..evaluate.metrics import paper_from_ranks
from ..evaluate.ranks import a2t_ranks
from ..evaluate.similarity import Scores

CURVE_KS = range(1, 101)


def measure(scores: Scores, audio_index: torch.Tensor, protocol: str, progress=False) -> dict:
    """{"metrics": the protocol's metrics (percent), "curves": {"t2a", "a2t"}: R@1..R@100}."""
    if protocol == "dcase":
        metrics, _ = dcase_protocol(scores, audio_index, progress=progress)
        return {"metrics": metrics}
    if protocol == "dcase2025":  # each caption's own clip: the split has no relevance file
        return {"metrics": dcase2025_protocol(scores, audio_index)}
    t2a, _ = t2a_ranks(scores, audio_index, progress=progress)
    a2t = a2t_ranks(scores, audio_index, progress=progress)
    curves = recall_from_ranks(t2a, a2t, audio_index, CURVE_KS)
    return {
        "metrics": paper_from_ranks(t2a, a2t, audio_index),
        "curves": {d: [round(float(v), 4) for v in c] for d, c in curves.items()},
    }
