"""Train the diffusion head on cached joint-space tensors (method.md, "Training loss").

Reads: a train cache and a validation cache (format v1, joint space). Writes: the checkpoint
(`checkpoint.py`) and a per-epoch log beside it (`<ckpt>.log.json` and `.log.csv`).

Each epoch shuffles the captions into batches of distinct clips (`batches.py`), trains one step
per batch (`trainer.py`: the loss, AdamW, the schedule, the EMA), then validates the EMA weights;
the best epoch's are saved.
"""

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..cache import Cache, CacheTensors, load_tensors, verify
from ..compiling import compile_settings
from ..device import flush_denormal, resolve_device
from ..errors import UserError
from ..evaluate import CosineScores, paper_protocol
from ..history import timeless, write_history
from ..malloc import retained_memory
from ..progress import Progress, warn
from ..threads import tick, training_threads
from . import native_loss, native_optim
from .batches import clip_unique_batches
from .checkpoint import Head, save_head
from .config import HeadConfig, RerankConfig
from .rerank import DiffusionScores
from .stacked_rerank import stacked_scores
from .trainer import HeadTrainer

DROPPED_WARNING = 0.25  # warn when this share of the captions never trains (a tiny split)
SELECT_ON = ("t2a_R@1", "t2a_R@5", "t2a_R@10", "a2t_R@1", "a2t_R@5", "a2t_R@10")
UNLIKE = "unlike cosine"  # history: how many validation metrics differ from cosine's (0: none)
# Said when every epoch's validation metrics equal cosine's on the same split: the re-ranking
# never moved a caption's clip (seen with 81 training pairs), so the head adds nothing yet.
LEARNED_NOTHING = (
    "{out}: the head's validation metrics equal cosine's at every epoch ({epochs}): it learned "
    "nothing that changes a ranking. Usual causes: too few training pairs ({pairs} here; "
    "thousands are typical), too few epochs, or a learning rate too low (or so high it "
    "diverged); check the loss in {out}.log.json"
)


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
    return train_heads([HeadJob(train_path, val_path, out, cfg, rerank)], progress, echo)[0]


@dataclass(frozen=True)
class HeadJob:
    """One head of a stacked run: its caches, checkpoint, settings and validation settings."""

    train: str | os.PathLike
    val: str | os.PathLike
    out: str | os.PathLike
    cfg: HeadConfig = HeadConfig()
    rerank: RerankConfig = RerankConfig()


def seed_jobs(
    train_path, val_path, folder, cfg: HeadConfig, rerank: RerankConfig, seeds
) -> list[HeadJob]:
    """One job per seed on the same caches: head S goes to FOLDER/seed{S}.pt."""
    folder = Path(folder)
    if folder.is_file():
        raise UserError(f"{folder}: a file; with several seeds --out names a folder")
    return [HeadJob(train_path, val_path, folder / f"seed{s}.pt", replace(cfg, seed=s), rerank)
            for s in seeds]  # fmt: skip


def stacks_heads(choice: bool | None, device: torch.device) -> bool:
    """Whether several heads train as one stacked computation: `choice`, or by default where
    per-operator overhead makes it pay: CUDA. On the CPU measured a stacked head costs about
    what a head alone does (0.92-1.05x) with H times the memory (README, "A table with three
    seeds")."""
    return device.type == "cuda" if choice is None else choice


def train_heads(
    jobs: list[HeadJob],
    progress: bool = True,
    echo: Callable[[str], None] = print,
    stack: bool | None = None,
) -> list[Head]:
    """Train several heads, as one stacked computation (`trainer.HeadTrainer` with seeds) when
    `stacks_heads(stack, device)`, else one after another.

    The jobs must differ only in their seed (HeadConfig), caches of one width and validation
    settings; each head gets exactly what `train_head` would give it alone (to float rounding):
    its own batches, noise, optimiser, validation, best epoch, checkpoint and logs.
    """
    cfg = _check_jobs(jobs)
    if len(jobs) > 1 and not stacks_heads(stack, resolve_device(cfg.device)):
        heads = []
        for job in jobs:
            echo(f"seed {job.cfg.seed}:")
            heads += train_heads([job], progress, echo)
        return heads
    compiles = cfg.compiled and not native_step(resolve_device(cfg.device))
    with flush_denormal(), training_threads(), compile_settings(compiles):
        return _train(jobs, progress, echo)


def native_step(device: torch.device) -> bool:
    """Whether the fast training step runs without torch.compile: on the CPU, its C kernels
    built (native_loss.py, native_optim.py). Then inductor's settings are not needed, and
    neither is importing it (~2-4 s of dynamo and inductor)."""
    return device.type == "cpu" and None not in (native_loss.library(), native_optim.library())


def _check_jobs(jobs: list[HeadJob]) -> HeadConfig:
    if not jobs:
        raise ValueError("no head to train")
    cfg = jobs[0].cfg
    for job in jobs:
        job.cfg.check()
        if replace(job.cfg, seed=cfg.seed) != cfg:
            raise ValueError("heads trained together may differ only in their seed")
    seeds = [job.cfg.seed for job in jobs]
    if len(jobs) > 1 and len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds trained together must differ, got {seeds}")
    outs = [Path(job.out).resolve() for job in jobs]
    if len(set(outs)) != len(outs):
        raise ValueError("heads trained together need one checkpoint path each")
    return cfg


def _train(jobs: list[HeadJob], progress, echo) -> list[Head]:
    cfg = _check_jobs(jobs)
    device = resolve_device(cfg.device)
    loaded: dict[str, CacheTensors] = {}

    def load(path, role) -> CacheTensors:
        if str(path) not in loaded:
            loaded[str(path)] = load_joint(path, role)
        return loaded[str(path)]

    runs = []
    for job in jobs:
        train, val = load(job.train, "train"), load(job.val, "validation")
        dim = train.audio.shape[1]
        if val.audio.shape[1] != dim:
            raise UserError(
                f"{job.val}: {val.audio.shape[1]}-d features, but the train cache's are {dim}-d"
            )
        if runs and dim != runs[0].dim:
            raise UserError(f"{job.train}: {dim}-d features, but {jobs[0].train}'s are "
                            f"{runs[0].dim}-d: heads trained together need one width")  # fmt: skip
        if str(job.train) not in (str(r.job.train) for r in runs):
            _warn_dropped(job.train, train.audio_index, cfg.batch_size)
        runs.append(_Run(job, train, val, device))
    n_batches = [r.n_batches for r in runs]
    H = len(jobs)
    totals = [cfg.epochs * n for n in n_batches]  # each head's schedule length
    trainer = HeadTrainer(runs[0].dim, cfg, totals, device, [job.cfg.seed for job in jobs])
    cosine: dict[str, dict[str, float]] = {}  # each validation cache's cosine metrics, once
    for h, run in enumerate(runs):
        run.ema = trainer.heads_ema[h]
        if str(run.job.val) not in cosine:
            scores = CosineScores(run.val.text, run.val.audio, device)
            cosine[str(run.job.val)] = paper_protocol(scores, run.val.audio_index.to(device))
        run.cosine = cosine[str(run.job.val)]
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        batches = [clip_unique_batches(r.index, cfg.batch_size, r.g) for r in runs]
        desc = f"epoch {epoch}/{cfg.epochs}" + (f" ({H} heads)" if H > 1 else "")
        # the steps only: caches loaded and arrays kept after training are allocated outside
        with retained_memory():
            losses = run_epoch_heads(trainer, batches, runs, desc, progress)
        seconds = time.perf_counter() - t0  # training time, shared by the heads
        t1 = time.perf_counter()
        metrics = validate_runs(runs, device, progress)
        seconds_val = (time.perf_counter() - t1) / H  # each head's share
        for run, loss, m in zip(runs, losses, metrics, strict=True):
            run.end_epoch(epoch, loss, seconds / H, echo, H > 1, m)
            run.history[-1]["seconds"] += seconds_val
            write_history(run.job.out, run.history)
    return [run.finish() for run in runs]


def validate_runs(runs: list["_Run"], device, progress: bool = False) -> list[dict[str, float]]:
    """Each run's validation metrics for this epoch. Heads validated on the same cache with
    settings that differ only in their seed re-rank the same top-k, so they sample together
    (`stacked_rerank.py`: each as alone, measured 1.06x faster for three heads on one CPU
    thread; bench/bench_stacked_rerank.py); any other head alone."""
    groups: dict[tuple, list[int]] = {}
    for i, run in enumerate(runs):
        groups.setdefault((str(run.job.val), replace(run.job.rerank, seed=0)), []).append(i)
    metrics: list[dict[str, float]] = [{} for _ in runs]
    for members in groups.values():
        group = [runs[i] for i in members]
        val = group[0].val
        if len(group) == 1:
            scores = [DiffusionScores(val.text, val.audio, group[0].head(), group[0].job.rerank,
                                      device)]  # fmt: skip
        else:
            heads, cfgs = [r.head() for r in group], [r.job.rerank for r in group]
            scores = stacked_scores(val.text, val.audio, heads, cfgs, device)
        for i, s in zip(members, scores, strict=True):
            # progress: ranking lines if it is long, and the note of a first compile
            metrics[i] = paper_protocol(s, val.audio_index.to(device), progress=progress)
    return metrics


def _warn_dropped(path, index: torch.Tensor, batch_size: int) -> None:
    """Warn when a tiny split leaves many captions out of each epoch, or its batches stay far
    below the batch size (too few distinct clips)."""
    first = clip_unique_batches(index, batch_size, torch.Generator().manual_seed(0))
    labelled, used = int((index >= 0).sum()), sum(len(b) for b in first)
    if first and labelled - used >= DROPPED_WARNING * labelled:
        warn(
            f"{path}: about {labelled - used} of {labelled} captions are left out of each "
            "epoch (a batch needs 2 or more distinct clips; too few clips for their captions)"
        )
    if first and len(first) * batch_size > 2 * used:
        warn(
            f"{path}: batches average {used / len(first):.1f} pairs, not "
            f"{batch_size}: too few distinct clips; lower --batch-size"
        )


class _Run:
    """One head's data, generator, validation, best epoch and checkpoint."""

    def __init__(self, job: HeadJob, train: CacheTensors, val: CacheTensors, device):
        self.job, self.val, self.device = job, val, device
        cfg = job.cfg
        self.dim = train.audio.shape[1]
        text, audio = train.text.to(device), train.audio.to(device)
        if cfg.normalize:
            text, audio = F.normalize(text, dim=1), F.normalize(audio, dim=1)
        self.text, self.audio, self.index = text, audio, train.audio_index
        self.g = torch.Generator().manual_seed(cfg.seed)
        g0 = torch.Generator().manual_seed(0)
        self.n_batches = len(clip_unique_batches(self.index, cfg.batch_size, g0))
        if self.n_batches == 0:
            raise UserError(f"{job.train}: too few distinct clips for a batch of {cfg.batch_size}")
        self.meta = {
            "train_cache": str(job.train),
            "val_cache": str(job.val),
            "rerank": asdict(job.rerank),
        }
        self.history: list[dict] = []
        self.best, self.best_score, self.best_epoch = None, -math.inf, 0
        self.ema: dict = {}
        self.cosine: dict[str, float] = {}  # cosine's metrics on the validation cache
        self.n_pairs = int((train.audio_index >= 0).sum())

    def head(self) -> Head:
        """The head's EMA weights as they are now."""
        return Head(self.job.cfg, self.ema["t2a"], self.ema["a2t"], self.meta)

    def end_epoch(
        self, epoch: int, loss: float, seconds: float, echo, tagged: bool, metrics: dict
    ) -> None:
        cfg, ema, out = self.job.cfg, self.ema, self.job.out
        score = sum(metrics[key] for key in SELECT_ON)
        unlike = sum(metrics[k] != self.cosine.get(k) for k in metrics)  # 0: cosine's own
        row = {"epoch": epoch, "loss": loss, "seconds": seconds, **metrics, UNLIKE: unlike}
        self.history.append(row)
        tag = f" (seed {cfg.seed})" if tagged else ""
        echo(
            f"epoch {epoch}{tag}: loss {row['loss']:.4f}, val t2a R@1 {metrics['t2a_R@1']:.1f}, "
            f"a2t R@1 {metrics['a2t_R@1']:.1f} ({row['seconds']:.1f} s)"
        )
        if score > self.best_score:  # saved at once: a crash later loses no finished epoch
            self.best_score, self.best_epoch = score, epoch
            self.best = {d: snapshot(net) for d, net in ema.items()}
            meta = _meta(self.meta, epoch, metrics, self.history)
            save_head(out, Head(cfg, ema["t2a"], ema["a2t"], meta))

    def finish(self) -> Head:
        cfg, ema = self.job.cfg, self.ema
        for d in ("t2a", "a2t"):
            ema[d].load_state_dict(self.best[d])
        final = _meta(self.meta, self.best_epoch, self.history[self.best_epoch - 1], self.history)
        if all(row[UNLIKE] == 0 for row in self.history):
            said = LEARNED_NOTHING.format(
                out=self.job.out, epochs=len(self.history), pairs=self.n_pairs
            )
            warn(said)
            final["warning"] = said  # in the checkpoint's metadata, beside the history
        head = Head(cfg, ema["t2a"], ema["a2t"], final)
        save_head(self.job.out, head)
        return head


def snapshot(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of `net`'s state of its own size. Stacked heads' parameters are views of one
    tensor holding every head (`stacked.py`), and deepcopy copies a view's whole storage (6x
    the head for three heads); clone copies the view's elements only."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _meta(meta: dict, epoch: int, metrics: dict, history: list[dict]) -> dict:
    drop = ("epoch", "loss", "seconds", UNLIKE)
    val = {k: v for k, v in metrics.items() if k not in drop}
    return {**meta, "epoch": epoch, "val_metrics": val, "history": timeless(history)}


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
        tick()  # the thread count for a shared machine (diffatr/threads.py)
        t, a = text[rows.to(text.device)], audio[index[rows].to(audio.device)]  # (B, D) each
        total, count = total + trainer.step(t, a, g), count + 1
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def run_epoch_heads(
    trainer: HeadTrainer, batches: list[list[torch.Tensor]], runs: list, desc: str, progress: bool
) -> list[float]:
    """One pass of every head over its own batches (runs[h]: .text, .audio, .index, .g), in
    step with each other; returns each head's mean summed (t2a + a2t) loss."""
    H = len(runs)
    total, count = [0.0] * H, [0] * H
    bar = Progress(range(max(map(len, batches))), desc=desc, unit="batch", disable=not progress)
    for i in bar:
        tick()  # the thread count for a shared machine (diffatr/threads.py)
        step = []
        for r, b in zip(runs, batches, strict=True):
            if i >= len(b):
                step.append(None)
                continue
            rows = b[i]
            t, a = r.text[rows.to(r.text.device)], r.audio[r.index[rows].to(r.audio.device)]
            step.append((t, a, r.g))
        # one head: the one-head API (what tests and benchmarks patch and time)
        losses = [trainer.step(*step[0])] if H == 1 else trainer.step_heads(step)
        for h, loss in enumerate(losses):
            if loss is not None:
                total[h], count[h] = total[h] + loss, count[h] + 1
        bar.set_postfix(loss=f"{total[0] / max(count[0], 1):.4f}")
    return [t / max(c, 1) for t, c in zip(total, count, strict=True)]
