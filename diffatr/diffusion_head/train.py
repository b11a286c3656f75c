"""Train the diffusion head on cached joint-space tensors (method.md, "Training loss").

Reads: a train cache and a validation cache (format v1, joint space). Writes: the checkpoint
(`checkpoint.py`) and a per-epoch log beside it (`<ckpt>.log.json` and `.log.csv`).

Each epoch shuffles the captions into batches of distinct clips (`batches.py`), trains one step
per batch (`trainer.py`: the loss, AdamW, the schedule, the EMA), then validates the EMA weights;
the best epoch's are saved.
"""

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ..cache import Cache, CacheTensors, load_tensors, verify
from ..device import flush_denormal, resolve_device
from ..errors import UserError
from ..evaluate import paper_protocol
from ..history import write_history
from ..progress import Progress, warn
from .batches import clip_unique_batches
from .checkpoint import Head, save_head
from .config import HeadConfig, RerankConfig
from .rerank import DiffusionScores
from .trainer import HeadTrainer

DROPPED_WARNING = 0.25  # warn when this share of the captions never trains (a tiny split)
SELECT_ON = ("t2a_R@1", "t2a_R@5", "t2a_R@10", "a2t_R@1", "a2t_R@5", "a2t_R@10")


def load_joint(path: str | os.PathLike, role: str) -> CacheTensors:
    """A verified joint-space cache as tensors, or a clear refusal."""
    verify(path).raise_if_bad()
    data = load_tensors(path)
    da, dt = data.audio.shape[1], data.text.shape[1]
    with Cache(path) as cache:
        space = cache.attrs.get("embedding_space")
    if da != dt or space == "backbone":
        held = f"{da}-d audio and {dt}-d text" if da != dt else "backbone (encoder)"
        raise UserError(
            f"{path}: {role} cache holds {held} features; the head needs one joint space. "
            "Phase 1 first: `diffatr train-contrastive TRAIN.h5 --val VAL.h5 --out proj.pt`, "
            f"then `diffatr project {path} --proj proj.pt --out JOINT.h5`, and train on those"
        )
    if int((data.audio_index >= 0).sum()) < 2:
        raise UserError(f"{path}: {role} cache has fewer than 2 captions with a clip")
    return data


def validate(head: Head, val: CacheTensors, rerank: RerankConfig, device) -> dict[str, float]:
    scores = DiffusionScores(val.text, val.audio, head, rerank, device)
    return paper_protocol(scores, val.audio_index.to(device))


def train_head(
    train_path: str | os.PathLike,
    val_path: str | os.PathLike,
    out: str | os.PathLike,
    cfg: HeadConfig = HeadConfig(),
    rerank: RerankConfig = RerankConfig(),
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> Head:
    """Train both directions, validate each epoch, save the best EMA weights; return them."""
    with flush_denormal():
        return _train(train_path, val_path, out, cfg, rerank, progress, echo)


def _train(train_path, val_path, out, cfg, rerank, progress, echo) -> Head:
    cfg.check()
    out = Path(out)
    device = resolve_device(cfg.device)
    train, val = load_joint(train_path, "train"), load_joint(val_path, "validation")
    dim = train.audio.shape[1]
    if val.audio.shape[1] != dim:
        raise UserError(
            f"{val_path}: {val.audio.shape[1]}-d features, but the train cache's are {dim}-d"
        )
    text, audio = train.text.to(device), train.audio.to(device)
    if cfg.normalize:
        text, audio = F.normalize(text, dim=1), F.normalize(audio, dim=1)
    index = train.audio_index
    g = torch.Generator().manual_seed(cfg.seed)
    first = clip_unique_batches(index, cfg.batch_size, torch.Generator().manual_seed(0))
    n_batches = len(first)
    if n_batches == 0:
        raise UserError(f"{train_path}: too few distinct clips for a batch of {cfg.batch_size}")
    labelled, used = int((index >= 0).sum()), sum(len(b) for b in first)
    if labelled - used >= DROPPED_WARNING * labelled:
        warn(
            f"{train_path}: about {labelled - used} of {labelled} captions are left out of each "
            "epoch (a batch needs 2 or more distinct clips; too few clips for their captions)"
        )
    if n_batches * cfg.batch_size > 2 * used:
        warn(
            f"{train_path}: batches average {used / n_batches:.1f} pairs, not "
            f"{cfg.batch_size}: too few distinct clips; lower --batch-size"
        )
    trainer = HeadTrainer(dim, cfg, cfg.epochs * n_batches, device)
    ema = trainer.ema
    history, best, best_score = [], None, -math.inf
    meta = {"train_cache": str(train_path), "val_cache": str(val_path), "rerank": asdict(rerank)}
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        batches = clip_unique_batches(index, cfg.batch_size, g)
        desc = f"epoch {epoch}/{cfg.epochs}"
        loss = run_epoch(trainer, batches, text, audio, index, g, desc, progress)
        head = Head(cfg, ema["t2a"], ema["a2t"], meta)
        metrics = validate(head, val, rerank, device)
        score = sum(metrics[key] for key in SELECT_ON)
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch, "loss": loss, "seconds": seconds, **metrics}
        history.append(row)
        echo(
            f"epoch {epoch}: loss {row['loss']:.4f}, val t2a R@1 {metrics['t2a_R@1']:.1f}, "
            f"a2t R@1 {metrics['a2t_R@1']:.1f} ({row['seconds']:.1f} s)"
        )
        if score > best_score:  # saved at once: a crash later loses no finished epoch
            best_score, best_epoch = score, epoch
            best = {d: copy.deepcopy(net.state_dict()) for d, net in ema.items()}
            save_head(out, Head(cfg, ema["t2a"], ema["a2t"], _meta(meta, epoch, metrics, history)))
        write_history(out, history)
    for d in ("t2a", "a2t"):
        ema[d].load_state_dict(best[d])
    final = _meta(meta, best_epoch, history[best_epoch - 1], history)
    head = Head(cfg, ema["t2a"], ema["a2t"], final)
    save_head(out, head)
    return head


def _meta(meta: dict, epoch: int, metrics: dict, history: list[dict]) -> dict:
    val = {k: v for k, v in metrics.items() if k not in ("epoch", "loss", "seconds")}
    return {**meta, "epoch": epoch, "val_metrics": val, "history": history}


def run_epoch(
    trainer: HeadTrainer,
    batches: list[torch.Tensor],
    text: torch.Tensor,
    audio: torch.Tensor,
    index: torch.Tensor,
    g: torch.Generator,
    desc: str = "train",
    progress: bool = False,
) -> float:
    """One pass over `batches` of caption rows; returns the mean summed (t2a + a2t) loss."""
    total, count = 0.0, 0
    bar = Progress(batches, desc=desc, unit="batch", disable=not progress)
    for rows in bar:
        t, a = text[rows.to(text.device)], audio[index[rows].to(audio.device)]  # (B, D) each
        total, count = total + trainer.step(t, a, g), count + 1
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)
