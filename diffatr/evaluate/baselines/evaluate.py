"""Build a baseline's `Scores`, and evaluate a cache with it beside the cosine baseline.

Reads: a joint-space cache and, for QB-Norm, a query-bank cache (the training split, same joint
space). Writes nothing (the CLI prints and writes JSON / a DCASE submission of the baseline's
ranking).
"""

import os
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ...cache import Cache, CacheTensors, load_tensors, verify
from ...errors import UserError
from ..cached import EvalConfig, EvalResult, evaluate_cache
from ..ranks import DEFAULT_MAX_ELEMENTS
from ..similarity import Scores
from ..topk import warn_if_topk_covers
from .config import BaselineConfig
from .dual_softmax import DualSoftmaxScores
from .inverted_softmax import InvertedSoftmaxScores
from .qb_norm import QBNormScores


def baseline_scores(
    name: str,
    text: torch.Tensor,
    audio: torch.Tensor,
    cfg: BaselineConfig,
    bank_text: torch.Tensor | None = None,
    bank_audio: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Scores:
    """The `name` baseline (one of BASELINES; cfg gives its settings, whatever cfg.name says)
    over text (Nt, D) and audio (Na, D), both directions.

    Only QB-Norm reads the bank, the bank's captions (Nb_t, D) and clips (Nb_a, D), and it
    needs both; the other two normalise over the split's own queries, so one factory call fits
    every baseline. `max_elements` bounds the similarity entries alive in the column pre-passes.
    """
    cfg = replace(cfg, name=name)
    cfg.check()
    if name == "dual-softmax":
        return DualSoftmaxScores(text, audio, cfg, device, max_elements)
    if name == "inverted-softmax":
        return InvertedSoftmaxScores(text, audio, cfg, device, max_elements)
    if bank_text is None or bank_audio is None or not len(bank_text) or not len(bank_audio):
        raise ValueError("qb-norm needs a query bank with both captions and clips")
    return QBNormScores(text, audio, bank_text, bank_audio, cfg, device, max_elements)


def load_bank(bank_path: str | os.PathLike, width: int, check: bool = True) -> CacheTensors:
    """The query bank's tensors, refusing a bank that cannot normalise a `width`-d split."""
    if check:
        verify(bank_path).raise_if_bad()
    bank = load_tensors(bank_path)
    bt, ba = bank.text.shape[1], bank.audio.shape[1]
    if bt != ba:
        raise UserError(
            f"{bank_path}: audio embeddings are {ba}-d and text {bt}-d: a query bank must be a "
            "joint-space cache (project a backbone cache first)"
        )
    if bt != width:
        raise UserError(
            f"{bank_path}: a {bt}-d query bank for a {width}-d split; use the training split "
            "embedded in the same joint space"
        )
    if not len(bank.text) or not len(bank.audio):
        raise UserError(f"{bank_path}: the query bank needs captions and clips; it has none")
    return bank


def evaluate_baseline(
    path: str | os.PathLike,
    cfg: BaselineConfig,
    eval_cfg: EvalConfig = EvalConfig(),
    bank_path: str | os.PathLike | None = None,
    submission: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict[str, EvalResult]:
    """{"cosine": baseline, cfg.name: the baseline's re-ranking} on the same cache and protocol."""
    try:
        cfg.check()
    except ValueError as e:
        raise UserError(str(e)) from None
    if cfg.name != "qb-norm" and bank_path is not None:
        raise UserError(
            f"{cfg.name} normalises over the split's own queries; a bank is for qb-norm"
        )
    if cfg.name == "qb-norm" and bank_path is None:
        raise UserError(
            "qb-norm normalises by a query bank: give the training split's cache (same joint "
            "space) with --bank TRAIN_CACHE"
        )
    bank = None
    if bank_path is not None:  # refuse a bank that does not fit before any ranking
        with Cache(path) as cache:
            width = cache.embeddings("text").shape[1]
        bank = load_bank(bank_path, width, eval_cfg.verify)

    bank_text, bank_audio = (None, None) if bank is None else (bank.text, bank.audio)

    def make_scores(text, audio, device):
        warn_if_topk_covers(cfg.topk, len(audio), len(text))
        return baseline_scores(
            cfg.name, text, audio, cfg, bank_text, bank_audio, device, eval_cfg.max_elements
        )

    cosine = evaluate_cache(path, eval_cfg, progress=progress)
    result = evaluate_cache(
        path, replace(eval_cfg, verify=False), submission, progress, make_scores, ranking=cfg.name
    )
    result.counts["baseline"] = {
        "config": asdict(cfg),
        "bank": None if bank_path is None else str(Path(bank_path)),
        "bank_captions": 0 if bank is None else len(bank.text),
        "bank_clips": 0 if bank is None else len(bank.audio),
    }
    return {"cosine": cosine, cfg.name: result}
