"""Benchmark: a whole ablation table with three seeds, heads stacked against one by one.

`diffatr ablate strategy` (Dis / Gen / Gen+Dis and the three baselines, seeds 0, 1, 2) on
AudioCaps-sized synthetic joint-space caches (train 49,274 pairs; val 495 clips x 5 captions;
test 957 x 5; D = 512), run twice in one process on the same caches: with the seeds' heads
trained as one stacked computation (`--stack`, CUDA's default) and one after another
(`--no-stack`, CPU's default; both evaluate the seeds together on the shared test cache). Then
the per-batch cost of 1, 2, 4 and 8 heads stacked (both directions each, compiled), against
the machine's measured matrix-product throughput (FLOPs counted by torch's FlopCounterMode).

    python bench/bench_table.py                 # full size (the lead's numbers; ~1 h on 2 cores)
    python bench/bench_table.py --scale 0.05    # 5% of every split, 1 epoch: a quick check
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffatr.cache import SyntheticConfig, make_synthetic
from diffatr.device import flush_denormal
from diffatr.diffusion_head import HeadConfig, RerankConfig
from diffatr.diffusion_head.stacked import group_losses
from diffatr.diffusion_head.trainer import HeadTrainer
from diffatr.experiments.config import AblationConfig, Dataset
from diffatr.experiments.runner import Ablation
from diffatr.malloc import retained_memory
from diffatr.threads import tick, training_threads


def caches(root: Path, scale: float) -> Dataset:
    sizes = {"train": (49_274, (1,)), "val": (495, (5,)), "test": (957, (5,))}
    paths = []
    for i, (split, (clips, caps)) in enumerate(sizes.items()):
        n = max(40, round(clips * scale))
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{split}.h5"
        make_synthetic(
            path, SyntheticConfig(n_clips=n, captions_per_clip=caps, seed=i), split=split
        )
        paths.append(str(path))
    return Dataset("audiocaps-synthetic", *paths)


def table(data: Dataset, root: Path, epochs: int, stack: bool) -> float:
    cfg = AblationConfig(
        seeds=(0, 1, 2), head=HeadConfig(epochs=epochs), rerank=RerankConfig(), stack_heads=stack
    )
    t = time.perf_counter()
    Ablation(root, cfg, echo=lambda _: None).run(["strategy"], [data])
    return time.perf_counter() - t


def matmul_gflops(n: int = 1024, repeat: int = 20) -> float:
    """The machine's float32 matrix-product rate at torch's thread count (GFLOP/s)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n**3 * repeat / (time.perf_counter() - t) / 1e9


def step_flops(B: int = 32, D: int = 512) -> float:
    """FLOPs of one head's training step (forward + backward, both directions), counted."""
    trainer = HeadTrainer(D, HeadConfig(compiled=False), total_steps=10)
    P, g = trainer.pair.params, torch.Generator().manual_seed(0)
    q, c = torch.randn(2, B, D, generator=g), torch.randn(2, B, D, generator=g)
    k, eps = torch.randint(0, 50, (2, B), generator=g), torch.randn(2, B, B, generator=g)
    with FlopCounterMode(display=False) as counter:
        losses = group_losses(P, trainer.pair.step_table, q, c, k, eps, trainer.abar, 100.0)
        losses.sum().backward()
    return counter.get_total_flops()


def per_batch(heads: int, batches: int) -> float:
    """Seconds per stacked step of `heads` heads (compiled; warm-up outside the timing)."""
    trainer = HeadTrainer(512, HeadConfig(), total_steps=10_000, seeds=range(heads))
    g = [torch.Generator().manual_seed(h) for h in range(heads)]
    data = [(torch.randn(32, 512), torch.randn(32, 512), g[h]) for h in range(heads)]
    with flush_denormal(), training_threads(), retained_memory():  # as training runs
        for _ in range(3):
            trainer.step_heads(data)
        t = time.perf_counter()
        for _ in range(batches):
            tick()
            trainer.step_heads(data)
    return (time.perf_counter() - t) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of every split")
    parser.add_argument("--epochs", type=int, default=None, help="[5; 1 when --scale < 1]")
    parser.add_argument("--batches", type=int, default=50, help="timed steps per head count")
    parser.add_argument("--part", choices=["table", "heads", "both"], default="both")
    args = parser.parse_args()
    epochs = args.epochs or (5 if args.scale >= 1 else 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(f"load average at start {os.getloadavg()}")
    if args.part in ("table", "both"):
        with tempfile.TemporaryDirectory(prefix="bench-table-") as tmp:
            root = Path(tmp)
            data = caches(root, args.scale)
            # both modes once on tiny caches first: every graph (G = 2 and 6, inference) is
            # compiled before the timed runs, so neither pays the compile warm-up
            tiny = caches(root / "tiny", 0.002)
            for stack in (True, False):
                table(tiny, root / f"warm-{stack}", 1, stack)
            print(f"ablate strategy, seeds 0,1,2, {epochs} epoch(s), scale {args.scale}:")
            seconds = {}
            for stack in (True, False):
                seconds[stack] = table(data, root / ("stacked" if stack else "seq"), epochs, stack)
                print(f"  {'stacked' if stack else 'one by one':<11} {seconds[stack]:8.1f} s")
            print(f"  one by one / stacked: {seconds[False] / seconds[True]:.2f}x")
    if args.part in ("heads", "both"):
        gflops, flops = matmul_gflops(), step_flops()
        print(f"matrix products (1024 x 1024 float32): {gflops:.1f} GFLOP/s")
        print(f"one head's step (B 32, D 512, both directions, fwd + bwd): {flops / 1e6:.0f} MFLOP")
        print(f"{'heads':>5} {'ms/batch':>9} {'ms/head':>8} {'GFLOP/s':>8} {'of matmul':>9}")
        for heads in (1, 2, 4, 8):
            s = per_batch(heads, args.batches)
            rate = heads * flops / s / 1e9
            print(
                f"{heads:>5} {1000 * s:9.1f} {1000 * s / heads:8.1f} {rate:8.1f} "
                f"{100 * rate / gflops:8.0f}%"
            )
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
