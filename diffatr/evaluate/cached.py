"""Evaluate retrieval straight from a cache: cosine similarity, or a head's re-ranked scores.

Reads: a joint-space cache (format v1). Writes: nothing (the CLI writes JSON / submission CSV).
"""

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..cache import Cache, verify
from ..device import resolve_device
from ..errors import UserError
from .dcase import SUBMISSION_COLUMNS, write_submission
from .dcase2025 import dcase2025_protocol, read_relevance, write_predictions
from .metrics import dcase_protocol, paper_protocol
from .per_query import QueryOutcomes, RecordingScores
from .ranks import DEFAULT_MAX_ELEMENTS
from .similarity import CosineScores, Scores

# (text (Nt, D), audio (Na, D), device) -> the Scores to rank by
ScoresFactory = Callable[[torch.Tensor, torch.Tensor, torch.device], Scores]

PROTOCOLS = ("paper", "dcase", "dcase2025")


@dataclass(frozen=True)
class EvalConfig:
    protocol: str = "paper"  # "paper": both directions (Mei et al.); "dcase": t2a + jackknife CI;
    #   "dcase2025": t2a mAP@16 with several relevant clips per query (DCASE 2025 Task 6)
    relevance: str = ""  # dcase2025: the relevance CSV ("" = each caption's own clip)
    max_elements: int = DEFAULT_MAX_ELEMENTS  # similarity entries held at once (4 bytes each)
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    verify: bool = True  # check the whole cache (NaN, index ranges, ...) before ranking
    per_query_top: int = 0  # > 0: also record each query's rank and its best N (--report)


@dataclass
class EvalResult:
    metrics: dict[str, float]
    config: EvalConfig
    cache: Path
    counts: dict[str, int] = field(default_factory=dict)
    ranking: str = "cosine"
    queries: QueryOutcomes | None = None  # with cfg.per_query_top > 0

    def to_json(self) -> dict:
        return {
            "cache": str(self.cache),
            "protocol": self.config.protocol,
            "ranking": self.ranking,
            "counts": self.counts,
            "metrics": self.metrics,
            "config": asdict(self.config),
        }


def evaluate_cache(
    path: str | os.PathLike,
    cfg: EvalConfig = EvalConfig(),
    submission: str | os.PathLike | None = None,
    progress: bool = False,
    make_scores: ScoresFactory | None = None,
    ranking: str = "cosine",
) -> EvalResult:
    """Rank by cosine similarity (or `make_scores`' scores, named `ranking`), compute the
    protocol's metrics, optionally write a submission."""
    if cfg.protocol not in PROTOCOLS:
        raise UserError(f"protocol must be one of {PROTOCOLS}, not {cfg.protocol!r}")
    if submission is not None and cfg.protocol == "paper":
        raise UserError(
            "a submission CSV is a DCASE artefact: use --protocol dcase or dcase2025 with it"
        )
    if cfg.relevance and cfg.protocol != "dcase2025":
        raise UserError("a relevance file is read by --protocol dcase2025 only")
    path = Path(path)
    if cfg.verify:
        verify(path).raise_if_bad()
    device = resolve_device(cfg.device)
    with Cache(path) as cache:
        data = cache.load_tensors()
    da, dt = data.audio.shape[1], data.text.shape[1]
    if da != dt:
        raise UserError(
            f"{path}: audio embeddings are {da}-d and text {dt}-d, so cosine ranking is undefined; "
            "this looks like a backbone-feature cache: project it into a joint space first"
        )
    index, ids, captions = data.audio_index, data.audio_ids, data.captions
    labelled = int((index >= 0).sum())
    relevance = read_relevance(cfg.relevance, captions, ids) if cfg.relevance else None
    if relevance is not None:
        labelled = relevance.n_queries
    if labelled == 0:
        raise UserError(f"{path}: no caption has a clip (audio_index is all -1): nothing to score")
    top = SUBMISSION_COLUMNS if submission is not None and cfg.protocol == "dcase" else 0
    if top and len(ids) < top:
        raise UserError(
            f"{path}: a submission lists {top} clips per caption; the cache has {len(ids)}"
        )
    if make_scores is None:
        scores = CosineScores(data.text, data.audio, device)
    else:
        scores = make_scores(data.text, data.audio, device)
    del data  # ranking needs only the normalised copies inside `scores`
    if cfg.per_query_top > 0:
        scores = RecordingScores(scores, index, cfg.per_query_top, relevance)
    counts = {
        "captions": len(captions),
        "clips": len(ids),
        "scored_captions": labelled,
        "clips_with_captions": int(torch.unique(index[index >= 0]).numel()),
    }
    if cfg.protocol == "paper":
        metrics = paper_protocol(scores, index, cfg.max_elements, progress)
    elif cfg.protocol == "dcase2025":
        metrics = dcase2025_protocol(scores, index, relevance, cfg.max_elements, progress)
        if submission is not None:
            write_predictions(submission, scores, captions, ids, cfg.max_elements)
    else:
        metrics, best = dcase_protocol(scores, index, cfg.max_elements, top, progress)
        if submission is not None:
            write_submission(submission, captions, [[ids[j] for j in row] for row in best.tolist()])
    queries = scores.outcomes() if isinstance(scores, RecordingScores) else None
    return EvalResult(metrics, cfg, path, counts, ranking, queries)
