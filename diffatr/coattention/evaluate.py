"""Evaluate a cache with a trained co-attention head, beside the cosine baseline.

Reads: a joint-space cache with frames and tokens, and a co-attention checkpoint. Writes
nothing (the CLI prints and writes JSON / a DCASE submission of the head's ranking).
"""

import os
from dataclasses import asdict, replace

from ..cache import Cache
from ..errors import UserError
from ..evaluate import EvalConfig, EvalResult, evaluate_cache
from ..evaluate.topk import warn_if_topk_covers
from .checkpoint import load_coattention
from .config import CoRerankConfig
from .rerank import CoAttentionScores
from .sequences import sequence_dims

RANKING = {"gen": "coattention", "fusion": "coattention-fusion"}


def evaluate_with_coattention(
    path: str | os.PathLike,
    checkpoint: str | os.PathLike,
    rerank: CoRerankConfig = CoRerankConfig(),
    cfg: EvalConfig = EvalConfig(),
    submission: str | os.PathLike | None = None,
    progress: bool = False,
    trust: bool = False,
) -> dict[str, EvalResult]:
    """{"cosine": baseline, "coattention" (or "coattention-fusion"): the head's re-ranking}
    (`trust`: --trust-checkpoint)."""
    rerank.check()
    head = load_coattention(checkpoint, trust=trust)
    with Cache(path) as cache:  # refuse features the head cannot read before any ranking
        frames, tokens = sequence_dims(cache, "evaluation")
    if (frames, tokens) != (head.dims["frames"], head.dims["tokens"]):
        raise UserError(
            f"{path}: frames/tokens are {frames}/{tokens}-d, but the head in {checkpoint} was "
            f"trained on {head.dims['frames']}/{head.dims['tokens']}-d: use a head trained on "
            "features of the same encoders"
        )

    def make_scores(text, audio, device):
        warn_if_topk_covers(rerank.topk, len(audio), len(text))
        with Cache(path) as cache:
            model = head.model.to(device)
            return CoAttentionScores(text, audio, model, head.config.tau, cache, rerank, device)

    baseline = evaluate_cache(path, cfg, progress=progress)
    name = RANKING[rerank.mode]
    result = evaluate_cache(
        path, replace(cfg, verify=False), submission, progress, make_scores, ranking=name
    )
    result.counts["head"] = {"checkpoint": str(checkpoint), "rerank": asdict(rerank)}
    return {"cosine": baseline, name: result}
