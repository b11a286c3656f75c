"""Train the co-attention head with NT-Xent on cached frame and token features.

Reads: a train cache (backbone or joint space: only its frames and tokens are used) and a
validation cache (joint space, with frames and tokens: its cosine top-k is re-ranked).
Writes: the checkpoint (`checkpoint.py`), rewritten atomically at every improvement, and a
per-epoch log beside it (`<ckpt>.log.json` and `.log.csv`).

Per epoch: the streamed batches (`loader.py`); per batch all B x B pair scores
(`CoAttentionHead.all_pairs`), L = NT-Xent(S, tau) with siblings left out (`loss.py`), AdamW
(weight decay on matrices only), linear warm-up then cosine decay, grad-norm clip. Then the
validation split's cosine top-k is re-ranked by the head ("gen") and scored with the paper
protocol; the best epoch by R@1 + R@5 + R@10 of both directions is kept. Same seed, same
checkpoint: the initialisation and dropout draw from torch's generator seeded with cfg.seed
(the caller's generator state is restored afterwards), the batches from the loader's.
"""

import copy
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..cache import Cache, CacheTensors, verify
from ..device import flush_denormal, resolve_device
from ..errors import UserError
from ..evaluate import paper_protocol
from ..history import timeless, write_history
from ..lr import warmup_cosine
from ..progress import Progress
from ..threads import tick, training_threads
from .checkpoint import CoHead, save_coattention
from .config import CoAttentionConfig, CoRerankConfig
from .loader import PairStream
from .loss import nt_xent
from .model import CoAttentionHead
from .rerank import CoAttentionScores
from .sequences import sequence_dims

SELECT_ON = ("t2a_R@1", "t2a_R@5", "t2a_R@10", "a2t_R@1", "a2t_R@5", "a2t_R@10")


def train_coattention(
    train_path: str | os.PathLike,
    val_path: str | os.PathLike,
    out: str | os.PathLike,
    cfg: CoAttentionConfig = CoAttentionConfig(),
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> CoHead:
    """Train, validate each epoch, keep the best epoch's weights in `out`; return them."""
    cfg.check()
    device = resolve_device(cfg.device)
    for path in (train_path, val_path):
        verify(path).raise_if_bad()
    with Cache(train_path) as train, Cache(val_path) as val_cache:
        dims = sequence_dims(train, "train")
        val_dims = sequence_dims(val_cache, "validation")
        if val_dims != dims:
            raise UserError(
                f"{val_path}: frames/tokens are {val_dims[0]}/{val_dims[1]}-d, but the train "
                f"cache's are {dims[0]}/{dims[1]}-d: use splits extracted with the same encoders"
            )
        val = val_cache.load_tensors()
        if val.audio.shape[1] != val.text.shape[1]:
            raise UserError(
                f"{val_path}: the validation cache holds {val.audio.shape[1]}-d audio and "
                f"{val.text.shape[1]}-d text embeddings; validation re-ranks their cosine top-k, "
                "so it needs a joint-space cache: project it first (`diffatr project`)"
            )
        stream = PairStream(train, cfg.batch_size, cfg.chunk_captions, cfg.buffer_chunks, cfg.seed)
        if len(stream.pairs) < 2:
            raise UserError(f"{train_path}: the train cache has fewer than 2 captions with a clip")
        meta = {"train_cache": str(train_path), "val_cache": str(val_path)}
        forked = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked), flush_denormal():
            torch.manual_seed(cfg.seed)
            model = CoAttentionHead(*dims, cfg).to(device)
            with training_threads():
                return _train(model, stream, val, val_cache, Path(out), cfg, meta, progress, echo)


def _train(model, stream, val, val_cache, out, cfg, meta, progress, echo) -> CoHead:
    device = next(model.parameters()).device
    opt = make_optimizer(model, cfg)
    total = cfg.epochs * len(stream)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, cfg.warmup))
    history, best, best_score, best_epoch = [], None, -math.inf, 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        loss = run_epoch(model, stream, epoch, opt, sched, cfg, progress)
        model.eval()
        metrics = validate(model, cfg, val, val_cache, device)
        score = sum(metrics[key] for key in SELECT_ON)
        row = {"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - t0, **metrics}
        history.append(row)
        echo(
            f"epoch {epoch}: loss {loss:.4f}, val t2a R@1 {metrics['t2a_R@1']:.1f}, "
            f"a2t R@1 {metrics['a2t_R@1']:.1f} ({row['seconds']:.1f} s)"
        )
        if score > best_score:  # saved at once: a crash later loses no finished epoch
            best_score, best_epoch = score, epoch
            best = copy.deepcopy(model.state_dict())
            save_coattention(out, CoHead(cfg, model, _meta(meta, epoch, metrics, history)))
        write_history(out, history)
    model.load_state_dict(best)
    head = CoHead(cfg, model.eval(), _meta(meta, best_epoch, history[best_epoch - 1], history))
    save_coattention(out, head)
    return head


def run_epoch(model, stream, epoch, opt, sched, cfg: CoAttentionConfig, progress=False) -> float:
    """One pass over the stream's batches; returns the mean NT-Xent loss."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    bar = Progress(
        stream.epoch(epoch),
        total=len(stream),
        desc=f"epoch {epoch}/{cfg.epochs}",
        unit="batch",
        disable=not progress,
    )
    for batch in bar:
        if len(batch.rows) < 2:  # a last batch of one pair has no negative: nothing to learn
            continue
        tokens, token_mask, frames, frame_mask, siblings = batch.tensors(device)
        S = model.all_pairs(
            model.encode_text(tokens, token_mask), model.encode_audio(frames, frame_mask)
        )  # (B, B)
        loss = nt_xent(S, cfg.tau, siblings)
        tick()  # the thread count for a shared machine (diffatr/threads.py)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        total, count = total + loss.item(), count + 1
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def validate(
    model: CoAttentionHead, cfg: CoAttentionConfig, val: CacheTensors, cache: Cache, device
) -> dict[str, float]:
    """Paper-protocol metrics of the validation split's cosine top-k re-ranked by the head."""
    rerank = CoRerankConfig(topk=cfg.val_topk)
    scores = CoAttentionScores(val.text, val.audio, model, cfg.tau, cache, rerank, device)
    return paper_protocol(scores, val.audio_index.to(device))


def make_optimizer(model: CoAttentionHead, cfg: CoAttentionConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not biases, not LayerNorms)."""
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _meta(meta: dict, epoch: int, metrics: dict, history: list[dict]) -> dict:
    val = {k: v for k, v in metrics.items() if k not in ("epoch", "loss", "seconds")}
    return {**meta, "epoch": epoch, "val_metrics": val, "history": timeless(history)}
