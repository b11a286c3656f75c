"""Evaluate a cache with a trained diffusion head, beside the cosine baseline.

Reads: a joint-space cache and a head checkpoint. Writes: nothing (the CLI prints and writes
JSON / a DCASE submission of the head's ranking).
"""

import os
from dataclasses import asdict, replace

from ..cache import Cache
from ..errors import UserError
from ..evaluate import EvalConfig, EvalResult, evaluate_cache
from ..evaluate.topk import warn_if_topk_covers
from .checkpoint import load_head
from .config import RerankConfig
from .rerank import DiffusionScores


def evaluate_with_head(
    path: str | os.PathLike,
    checkpoint: str | os.PathLike,
    rerank: RerankConfig = RerankConfig(),
    cfg: EvalConfig = EvalConfig(),
    submission: str | os.PathLike | None = None,
    progress: bool = False,
    trust: bool = False,
) -> dict[str, EvalResult]:
    """{"cosine": baseline, "diffatr": the head's re-ranking} on the same cache and protocol
    (`trust`: --trust-checkpoint)."""
    head = load_head(checkpoint, trust=trust)
    rerank.check()
    if rerank.steps is not None and not 1 <= rerank.steps <= head.config.K:
        raise UserError(
            f"{checkpoint}: the head was trained with K={head.config.K} diffusion steps; "
            f"--steps must be between 1 and {head.config.K}, not {rerank.steps}"
        )

    with Cache(path) as cache:  # refuse a head of another width before any ranking
        width = cache.embeddings("text").shape[1] if cache.has("text") else head.dim
    if width != head.dim:
        raise UserError(
            f"{path}: {width}-d embeddings, but the head in {checkpoint} is {head.dim}-d: "
            "use a head trained on caches of this joint space"
        )

    def make_scores(text, audio, device):
        if text.shape[1] != head.dim:
            raise UserError(
                f"{path}: {text.shape[1]}-d embeddings, but the head in {checkpoint} is "
                f"{head.dim}-d: use a head trained on caches of this joint space"
            )
        warn_if_topk_covers(rerank.topk, len(audio), len(text))
        return DiffusionScores(text, audio, head, rerank, device)

    baseline = evaluate_cache(path, cfg, progress=progress)
    name = "diffatr" if rerank.mode == "fusion" else "diffatr-gen"
    result = evaluate_cache(
        path, replace(cfg, verify=False), submission, progress, make_scores, ranking=name
    )
    result.counts["head"] = {"checkpoint": str(checkpoint), "rerank": asdict(rerank)}
    return {"cosine": baseline, name: result}
