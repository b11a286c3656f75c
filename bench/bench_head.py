"""Benchmark: the diffusion head's fast path against the naive reference, same weights.

Inference at AudioCaps test scale (957 clips x 5 captions, D = 512, both directions, top-32,
K = 50 DDIM steps): the fused path as the C and numba loops (native_ddim.py), as
torch.compile'd steps and as eager torch steps, and the reference
`Denoiser.forward` (concatenating [E, C_j] and running the 2D x 2D decoder per candidate).
`--topk all` at the same scale in a child process (time and its peak RSS). Training: one epoch
on an AudioCaps-sized train split (49,274 pairs, batch 32) through the factorised and the
reference denoiser, and a whole `train_head` run of five epochs with validation.

    python bench/bench_head.py                  # everything (the README's numbers), ~15 min
    python bench/bench_head.py --part infer     # one part: infer | all | train | train5
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffatr.cache import SyntheticConfig, load_tensors, make_synthetic
from diffatr.device import flush_denormal
from diffatr.diffusion_head import (
    DiffusionScores,
    HeadConfig,
    RerankConfig,
    ddim_sample,
    native_ddim,
)
from diffatr.diffusion_head.batches import clip_unique_batches
from diffatr.diffusion_head.checkpoint import Head, new_denoiser
from diffatr.diffusion_head.rerank import row_noise
from diffatr.diffusion_head.train import run_epoch
from diffatr.diffusion_head.trainer import HeadTrainer

PEAK_RSS_MB = (
    "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
)


def random_head(dim: int, K: int = 50, seed: int = 0) -> Head:
    """A head with random weights (std 0.02 as initialised, biases small but nonzero)."""
    torch.manual_seed(seed)
    nets = [new_denoiser(dim, K).eval() for _ in range(2)]
    for net in nets:
        for p in net.parameters():
            if p.dim() == 1:
                torch.nn.init.normal_(p, std=0.02)
    return Head(HeadConfig(K=K), nets[0], nets[1], {})


def naive_block(head: Head, direction: str, S: torch.Tensor, queries, gallery, cfg, row0):
    """The reference path for rows S (b, Nc): top-k, DDIM through Denoiser.forward, fusion."""
    net = head.t2a if direction == "t2a" else head.a2t
    out = S.clone()
    for s in range(0, len(S), cfg.query_block):
        Sb, q = out[s : s + cfg.query_block], queries[s : s + cfg.query_block]
        top = Sb.topk(cfg.topk, dim=1).indices  # (b, k)
        x_T = torch.stack(
            [row_noise(cfg.seed, direction, row0 + s + i, (1, cfg.topk))[0] for i in range(len(Sb))]
        )  # (b, k)
        cand = gallery[top]  # (b, k, D)
        x0_hat = ddim_sample(lambda x, k, q=q, c=cand: net(x, k, q, c), x_T, head.betas)
        Sb.scatter_add_(1, top, cfg.alpha * torch.softmax(x0_hat / cfg.temperature, -1))
    return out


@torch.no_grad()
def bench_infer(head: Head, text, audio, compiled_too: bool = True) -> None:
    cfg = RerankConfig(topk=32)
    results = {}
    backend, torch_steps = native_ddim.backend, lambda *args: None
    runs = [
        ("fused, C loop", True, backend),
        ("fused, numba loop", False, backend),
        ("fused, compiled", True, torch_steps),
        ("fused, eager", False, torch_steps),
    ]
    for name, compiled, native in runs:
        if compiled and not compiled_too:
            continue
        native_ddim.backend = native  # the native loops, or fused.py's torch steps
        try:
            scores = DiffusionScores(text, audio, head, RerankConfig(topk=32, compiled=compiled))
            if compiled:  # build, compile or load the code outside the timing
                t = time.perf_counter()
                scores.t2a(0, 8), scores.a2t(0, 8)
                print(f"  warm-up ({name}): {time.perf_counter() - t:.1f} s")
            t = time.perf_counter()
            results[name] = (scores.t2a(0, scores.n_text), scores.a2t(0, scores.n_audio))
        finally:
            native_ddim.backend = backend
        print(f"  {name:<16} {time.perf_counter() - t:7.1f} s  (both directions, top-32, K=50)")
    cos = DiffusionScores(text, audio, head, RerankConfig(topk=32, compiled=False)).cosine
    t = time.perf_counter()
    with flush_denormal():
        naive = (
            naive_block(head, "t2a", cos.t2a(0, cos.n_text), text, audio, cfg, 0),
            naive_block(head, "a2t", cos.a2t(0, cos.n_audio), audio, text, cfg, 0),
        )
    print(f"  {'naive reference':<16} {time.perf_counter() - t:7.1f} s")
    for name, (st, sa) in results.items():
        diff = max((st - naive[0]).abs().max().item(), (sa - naive[1]).abs().max().item())
        print(f"  max |S' - S'_naive| ({name}): {diff:.2e}")


def bench_all_child(cache: Path) -> dict:
    """--topk all in a fresh process: wall time and that process's peak RSS."""
    code = (
        "import sys, json, time, torch\n"
        "sys.path.insert(0, 'bench')\n"
        "from bench_head import random_head\n"
        "from diffatr.cache import load_tensors\n"
        "from diffatr.diffusion_head import DiffusionScores, RerankConfig\n"
        "from diffatr.evaluate import paper_protocol\n"
        "d = load_tensors(sys.argv[1])\n"
        "head = random_head(d.text.shape[1])\n"
        "s = DiffusionScores(d.text, d.audio, head, RerankConfig(topk=None))\n"
        "t = time.perf_counter(); s.t2a(0, 4), s.a2t(0, 4); warm = time.perf_counter() - t\n"
        "t = time.perf_counter(); m = paper_protocol(s, d.audio_index)\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'warmup': warm, "
        f"'peak_rss_mb': {PEAK_RSS_MB}, 't2a_R@1': m['t2a_R@1']}}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(cache)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_train(train_cache: Path, fused_only: bool = False) -> None:
    """One epoch: the fast path (stacked, compiled, fused optimiser step; warm-up, i.e. compiling
    or loading the compiled code, timed apart) and the naive reference path."""
    data = load_tensors(train_cache)
    dim = data.text.shape[1]
    for fused in (True,) if fused_only else (True, False):
        cfg = HeadConfig(fused=fused)
        g = torch.Generator().manual_seed(0)
        batches = clip_unique_batches(data.audio_index, cfg.batch_size, g)
        trainer = HeadTrainer(dim, cfg, len(batches))
        args = (data.text, data.audio, data.audio_index, g)
        with flush_denormal():
            t = time.perf_counter()
            warm = run_epoch(trainer, batches[:2], *args) if fused else None
            t_warm = time.perf_counter() - t
            t = time.perf_counter()
            loss = run_epoch(trainer, batches[2:] if fused else batches, *args)
            seconds = time.perf_counter() - t
        if fused:  # the two warm-up batches counted at the epoch's mean speed
            seconds *= len(batches) / (len(batches) - 2)
        name = "fast path" if fused else "naive reference"
        extra = f", warm-up {t_warm:.1f} s" if warm is not None else ""
        print(
            f"  {name:<16} one epoch, {len(batches)} batches of {cfg.batch_size}: "
            f"{seconds:7.1f} s ({1000 * seconds / len(batches):.1f} ms/batch, mean loss "
            f"{loss:.3f}{extra})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part", choices=["infer", "all", "train", "train5", "everything"], default="everything"
    )
    parser.add_argument("--test-clips", type=int, default=957)
    parser.add_argument("--train-clips", type=int, default=49_274)
    args = parser.parse_args()
    parts = {"infer", "all", "train", "train5"} if args.part == "everything" else {args.part}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        test = Path(tmp) / "test.h5"
        make_synthetic(test, SyntheticConfig(n_clips=args.test_clips, seed=1), split="test")
        data = load_tensors(test)
        print(f"test split: {len(data.text)} captions x {len(data.audio)} clips x 512-d")
        if "infer" in parts:
            print("inference, top-32:")
            bench_infer(random_head(512), data.text, data.audio)
        if "all" in parts:
            r = bench_all_child(test)
            print(
                f"inference, --topk all (child process): {r['seconds']:.1f} s "
                f"(+ {r['warmup']:.1f} s warm-up), peak RSS {r['peak_rss_mb']:.0f} MB"
            )
        if parts & {"train", "train5"}:
            train = Path(tmp) / "train.h5"
            cfg = SyntheticConfig(n_clips=args.train_clips, captions_per_clip=(1,), seed=2)
            make_synthetic(train, cfg, split="train")
            if "train" in parts:
                print(f"training, {args.train_clips} pairs:")
                bench_train(train)
            if "train5" in parts:
                from diffatr.diffusion_head.train import train_head

                t = time.perf_counter()
                train_head(train, test, Path(tmp) / "head.pt", HeadConfig(), progress=False)
                print(
                    f"train_head, 5 epochs + validation each epoch: {time.perf_counter() - t:.1f} s"
                )


if __name__ == "__main__":
    main()
