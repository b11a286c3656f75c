"""`diffatr.evaluate`: a cache's retrieval metrics and per-query ranks, by cosine, with a
trained head or with a training-free baseline; the one function `diffatr evaluate` calls too.

Reads: a cache, a head checkpoint (optional), a query bank (qb-norm). Writes: a DCASE
submission CSV when asked (`submission=`); nothing else.
"""

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .caches import cache_path
from .heads import head_path
from .ranking import Ranks, nest


def evaluate_systems(
    cache: str | os.PathLike,
    cfg,
    head: str | os.PathLike | None = None,
    rerank=None,
    baseline=None,
    bank: str | os.PathLike | None = None,
    submission: str | os.PathLike | None = None,
    progress: bool = False,
    trust: bool = False,
) -> dict:
    """{system name: EvalResult}: cosine alone, or cosine beside one re-ranker.

    cfg: an `EvalConfig`; head + rerank: a checkpoint with its `RerankConfig` (diffusion) or
    `CoRerankConfig` (co-attention); baseline (+ bank): a `BaselineConfig`; trust: the head may be
    a full pickle (`--trust-checkpoint`: it runs code from the file). `diffatr evaluate`
    and `diffatr.evaluate` both answer through here, so they cannot disagree.
    """
    from ..evaluate import evaluate_cache

    if baseline is not None:
        from ..evaluate.baselines import evaluate_baseline

        return evaluate_baseline(cache, baseline, cfg, bank, submission, progress)
    if head is None:
        return {"cosine": evaluate_cache(cache, cfg, submission=submission, progress=progress)}
    from ..coattention.config import CoRerankConfig

    if isinstance(rerank, CoRerankConfig):
        from ..coattention.evaluate import evaluate_with_coattention

        return evaluate_with_coattention(cache, head, rerank, cfg, submission, progress, trust)
    from ..diffusion_head.evaluate import evaluate_with_head

    return evaluate_with_head(cache, head, rerank, cfg, submission, progress, trust)


@dataclass
class Result:
    """What `diffatr.evaluate` returns; `print(result)` shows the table `diffatr evaluate` prints.

    metrics: {"t2a": {"R@1": ..., "R@5", "R@10", "mAP@10", "medR", "meanR"}, "a2t": {...}} of
    the re-ranked system (the head's or baseline's; cosine's without one), percentages as the
    CLI's --json. ranks: that system's per-query ground-truth ranks (`Ranks`). systems: every
    system's raw `EvalResult` (cosine first), keyed by name as in the CLI's JSON.
    """

    metrics: dict[str, dict[str, float]]
    ranks: Ranks
    ranking: str
    protocol: str
    systems: dict = field(repr=False)

    def table(self) -> str:
        from ..evaluate import format_table

        return format_table({n: r.metrics for n, r in self.systems.items()}, self.protocol)

    def to_json(self) -> dict:
        """The payload `diffatr evaluate --json` writes."""
        if len(self.systems) == 1:
            return next(iter(self.systems.values())).to_json()
        return {name: r.to_json() for name, r in self.systems.items()}

    def __str__(self) -> str:
        return self.table()


def evaluate(
    cache,
    head=None,
    topk: int | None = 32,
    protocol: str = "paper",
    *,
    baseline: str | None = None,
    bank: str | os.PathLike | None = None,
    relevance: str | os.PathLike | None = None,
    alpha: float = 1.0,
    temperature: float = 1.0,
    steps: int | None = None,
    eta: float = 0.0,
    seed: int = 0,
    mode: str | None = None,
    compiled: bool = True,
    beta: float | None = None,
    dsl_temperature: float | None = None,
    device: str = "auto",
    max_elements: int | None = None,
    verify: bool = True,
    submission: str | os.PathLike | None = None,
    progress: bool = False,
    trust_checkpoint: bool = False,
) -> Result:
    """Evaluate `cache` (a path or `open_cache(...)`) by cosine, or re-ranked.

    head: a checkpoint path or `load_head(...)` (diffusion or co-attention); topk: candidates
    it re-ranks per query (None = all); protocol: "paper", "dcase" or "dcase2025" (with
    `relevance`, the annotations CSV). The head's options are those of
    `diffatr evaluate --head` (alpha, temperature, steps, eta, seed, mode [default: fusion for
    a diffusion head, gen for a co-attention one], compiled); baseline: "dual-softmax",
    "inverted-softmax" or "qb-norm" (with `bank`, a training-split cache), beta and
    dsl_temperature as the CLI's; trust_checkpoint: load a head that needs full unpickling
    (`--trust-checkpoint`: runs code from the file). Bad input raises `diffatr.UserError`.
    """
    from ..evaluate import EvalConfig

    path = cache_path(cache)
    chunking = {"max_elements": max_elements} if max_elements else {}
    cfg = EvalConfig(
        protocol=protocol,
        relevance=str(relevance or ""),
        device=device,
        verify=verify,
        per_query_top=1,  # records each query's rank: `Result.ranks`
        **chunking,
    )
    if head is not None and baseline is not None:
        raise ConfigError("head and baseline: give one re-ranker per evaluation")
    if bank is not None and baseline != "qb-norm":
        raise ConfigError('a bank is the query bank of baseline="qb-norm"')
    reranker = {}
    if baseline is not None:
        reranker = {"baseline": _baseline_config(baseline, topk, beta, dsl_temperature)}
        reranker["bank"] = bank
    elif head is not None:
        head_file, kind = head_path(head, trust_checkpoint)
        options = {"topk": topk, "mode": mode, "alpha": alpha}
        rerank = _head_config(kind, options, temperature, steps, eta, seed, compiled)
        reranker = {"head": head_file, "rerank": rerank}
    systems = evaluate_systems(
        path, cfg, submission=submission, progress=progress, trust=trust_checkpoint, **reranker
    )
    name, main = list(systems.items())[-1]  # the re-ranker comes after cosine
    q = main.queries
    ranks = Ranks(q.t2a_rank, q.a2t_rank, _index(path))
    return Result(nest(main.metrics), ranks, name, protocol, systems)


def _head_config(kind, options, temperature, steps, eta, seed, compiled):
    if kind == "coattention":
        from ..coattention.config import CoRerankConfig

        diffusion_only = {"temperature": temperature != 1.0, "steps": steps is not None}
        diffusion_only |= {"eta": eta != 0.0, "seed": seed != 0, "compiled": not compiled}
        wrong = [k for k, v in diffusion_only.items() if v]
        if wrong:
            raise ConfigError(f"{', '.join(wrong)}: only a diffusion head takes these")
        return CoRerankConfig(
            topk=options["topk"], mode=options["mode"] or "gen", alpha=options["alpha"]
        )
    from ..diffusion_head import RerankConfig

    return RerankConfig(
        topk=options["topk"],
        alpha=options["alpha"],
        temperature=temperature,
        steps=steps,
        eta=eta,
        seed=seed,
        mode=options["mode"] or "fusion",
        compiled=compiled,
    )


def _baseline_config(name, topk, beta, dsl_temperature):
    from ..evaluate.baselines import BaselineConfig

    settings = {"beta": beta, "temperature": dsl_temperature}
    cfg = BaselineConfig(
        name=name, topk=topk, **{k: v for k, v in settings.items() if v is not None}
    )
    try:
        cfg.check()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return cfg


def _index(path) -> np.ndarray:
    from ..cache import Cache

    with Cache(path) as c:
        return c.audio_index()


__all__ = ["Result", "evaluate", "evaluate_systems"]
