"""Benchmark: phase 1 at AudioCaps scale, on synthetic backbone features.

Train split: 49,274 clips x 1 caption (AudioCaps train as Mei et al. downloaded it), 2048-d
audio, 768-d text -> J = 512; validation split: 494 clips x 5 captions. Times one epoch of
`train_contrastive` (batch 32, Adam, then the validation pass) and `project_cache` of the
train split (49,274 + 49,274 rows). The caches are written to a temporary folder first (not
timed). `--scale 0.05` runs the same at 5% of the clips, for a quick check.

    python bench/bench_contrastive.py                 # AudioCaps size (~1.2 GB of caches)
    python bench/bench_contrastive.py --scale 0.05    # a quick check
"""

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from diffatr.cache import BackboneSyntheticConfig, make_synthetic_backbone
from diffatr.contrastive import ContrastiveConfig, project_cache, train_contrastive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=49_274, help="train clips (1 caption each)")
    parser.add_argument("--val-clips", type=int, default=494, help="val clips (5 captions each)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply both clip counts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_train = max(args.batch_size, round(args.clips * args.scale))
    n_val = max(2, round(args.val_clips * args.scale))
    data = BackboneSyntheticConfig()
    print(
        f"train {n_train} pairs, val {n_val} x 5, {data.audio_dim}/{data.text_dim} -> 512, "
        f"batch {args.batch_size}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-contrastive-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        train_cfg = replace(data, n_clips=n_train, captions_per_clip=(1,), seed=1)
        make_synthetic_backbone(root / "train.h5", train_cfg, split="train")
        make_synthetic_backbone(root / "val.h5", replace(data, n_clips=n_val, seed=2), split="val")
        print(f"  caches written in {time.perf_counter() - t:.1f} s (not part of the numbers)")

        cfg = ContrastiveConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device)
        t = time.perf_counter()
        proj = train_contrastive(
            root / "train.h5", root / "val.h5", root / "p.pt", cfg, False, lambda _: None
        )
        total = time.perf_counter() - t
        steps = n_train // args.batch_size
        for row in proj.meta["history"]:
            train_s, val_s = row["train_seconds"], row["seconds"] - row["train_seconds"]
            print(
                f"  epoch {row['epoch']}: train {train_s:.1f} s ({steps} batches, "
                f"{1000 * train_s / steps:.1f} ms each), validation {val_s:.2f} s"
            )
        print(f"  train_contrastive total (loading, epochs, checkpoints): {total:.1f} s")

        t = time.perf_counter()
        project_cache(root / "train.h5", root / "p.pt", root / "train_joint.h5")
        print(f"  project_cache of the train split ({n_train} clips + captions): "
              f"{time.perf_counter() - t:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
