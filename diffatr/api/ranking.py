"""The pieces of evaluation for arrays in memory: ground-truth ranks, then metrics from them.

Reads: embeddings (numpy arrays or torch tensors) and the caption -> clip index. Writes nothing.
`rank` ranks by cosine similarity (or any similarity matrix you pass); `metrics` gives the paper
protocol's numbers (Mei et al.; percentages) from those ranks, the same code `diffatr evaluate`
runs.
"""

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError


@dataclass
class Ranks:
    """Each query's ground-truth rank (1 = first; 0 = not a query, it has no ground truth).

    t2a (Nt,): caption j's clip among all clips. a2t (Na,): clip i's best-ranked caption
    among all captions. a2t_captions (Nt,): each caption's rank in its clip's query, which
    a2t mAP@10 needs (None where only the best ranks were recorded).
    """

    t2a: np.ndarray
    a2t: np.ndarray
    audio_index: np.ndarray
    a2t_captions: np.ndarray | None = None

    def __getitem__(self, direction: str) -> np.ndarray:
        if direction not in ("t2a", "a2t"):
            raise KeyError(direction)
        return getattr(self, direction)

    def recall(self, ks=range(1, 101)) -> dict[str, np.ndarray]:
        """Recall curves, {"t2a": R@k, "a2t": R@k} in percent for each k of `ks` (the paper
        protocol's R@k: a2t counts a clip's best-ranked caption)."""
        ks = np.asarray(list(ks), dtype=np.int64)
        out = {}
        for direction in ("t2a", "a2t"):
            best = np.sort(self[direction][self[direction] > 0])
            out[direction] = 100.0 * np.searchsorted(best, ks, side="right") / max(len(best), 1)
        return out


def _tensor(x) -> torch.Tensor:
    if hasattr(x, "detach"):
        return x.detach().cpu().float()
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def _index(audio_index, n_text: int, n_audio: int) -> torch.Tensor:
    if audio_index is None:
        if n_text != n_audio:
            raise UserError(
                f"{n_text} captions and {n_audio} clips: give audio_index (each caption's clip "
                "row) unless row j of text describes row j of audio"
            )
        return torch.arange(n_text)
    index = torch.as_tensor(np.asarray(audio_index, dtype=np.int64)).reshape(-1)
    if len(index) != n_text:
        raise UserError(f"{n_text} captions but {len(index)} audio_index entries")
    if len(index) and (index.max() >= n_audio or index.min() < -1):
        raise UserError(f"audio_index holds rows outside 0..{n_audio - 1} (or -1 for none)")
    return index


def rank(audio, text, audio_index=None, similarity=None) -> Ranks:
    """Ground-truth ranks of both directions, ties broken by gallery order.

    audio (Na, D), text (Nt, D): embeddings, ranked by cosine similarity; or pass
    `similarity` (Nt, Na), any scores (a re-ranker's rows), and audio/text only for their
    counts. audio_index (Nt,): each caption's clip row, -1 for none [default: caption j is
    of clip j].
    """
    from ..evaluate.ranks import a2t_ranks, t2a_ranks
    from ..evaluate.similarity import CosineScores, DenseScores

    n_audio, n_text = len(audio), len(text)
    index = _index(audio_index, n_text, n_audio)
    if similarity is None:
        scores = CosineScores(_tensor(text), _tensor(audio), "cpu")
    else:
        S = _tensor(similarity)
        if tuple(S.shape) != (n_text, n_audio):
            raise UserError(f"similarity is {tuple(S.shape)}; expected ({n_text}, {n_audio})")
        scores = DenseScores(S)
    t2a, _ = t2a_ranks(scores, index)
    captions = a2t_ranks(scores, index)
    best = np.zeros(n_audio, np.int64)
    labelled = (index >= 0).numpy()
    clips, ranks = index.numpy()[labelled], captions.numpy()[labelled]
    best_rank = np.full(n_audio, np.iinfo(np.int64).max)
    np.minimum.at(best_rank, clips, ranks)
    has = best_rank < np.iinfo(np.int64).max
    best[has] = best_rank[has]
    return Ranks(t2a.numpy(), best, index.numpy(), captions.numpy())


def metrics(ranks: Ranks) -> dict[str, dict[str, float]]:
    """The paper protocol's metrics, {"t2a": {"R@1", ...}, "a2t": {...}}, from `rank`'s ranks.

    With ranks that hold only each clip's best caption (`a2t_captions` None), a2t has R@k,
    medR and meanR but no mAP@10.
    """
    from ..evaluate.metrics import a2t_metrics, t2a_metrics

    t2a = np.asarray(ranks.t2a)
    if not (t2a > 0).any():
        raise UserError("no caption has a clip: nothing to score")
    out = {"t2a": _strip(t2a_metrics(t2a[t2a > 0]), "t2a_")}
    if ranks.a2t_captions is not None:
        out["a2t"] = _strip(a2t_metrics(ranks.a2t_captions, ranks.audio_index), "a2t_")
    else:
        best = np.asarray(ranks.a2t)
        full = _strip(t2a_metrics(best[best > 0]), "t2a_")  # the same formulas on r_1
        out["a2t"] = {k: v for k, v in full.items() if k != "mAP@10"}
    return out


def _strip(flat: dict[str, float], prefix: str) -> dict[str, float]:
    return {k.removeprefix(prefix): v for k, v in flat.items()}


def nest(flat: dict[str, float]) -> dict[str, dict[str, float]]:
    """{"t2a_R@1": x, ...} (the CLI's JSON keys) -> {"t2a": {"R@1": x}, ...}."""
    out: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        direction, _, name = key.partition("_")
        out.setdefault(direction, {})[name] = value
    return out
