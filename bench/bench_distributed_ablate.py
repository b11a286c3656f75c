"""Benchmark: an ablation table with three seeds in one process against N torchrun processes,
and what the spreading costs per run (claiming, looking, waiting).

`diffatr ablate strategy --seeds 0,1,2` (Dis / Gen / Gen+Dis and the three baselines) on
AudioCaps-shaped synthetic joint caches scaled by `--scale`, run as a plain command (one
process, the default thread policy over all cores) and under `torchrun --standalone
--nproc-per-node N` (each rank its share of the cores), each into a fresh results folder, wall
time of the whole command (process start-up included). Then the ranks' own account of their
scheduling overhead per run (from their last line), and claim + release of a free run on this
file system, in ms (`experiments/claims.py`).

    python bench/bench_distributed_ablate.py                  # scale 0.02, 1 epoch, N = 2
    python bench/bench_distributed_ablate.py --scale 0.05 --procs 2 --compile
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from diffatr.cache import SyntheticConfig, make_synthetic
from diffatr.experiments.claims import Claims


def caches(root: Path, scale: float) -> str:
    sizes = {"train": (49_274, (1,)), "val": (495, (5,)), "test": (957, (5,))}
    paths = []
    for i, (split, (clips, caps)) in enumerate(sizes.items()):
        path = root / f"{split}.h5"
        cfg = SyntheticConfig(n_clips=max(40, round(clips * scale)), captions_per_clip=caps, seed=i)
        make_synthetic(path, cfg, split=split)
        paths.append(str(path))
    return "syn=" + ",".join(paths)


def command(data: str, out: Path, opts: argparse.Namespace, procs: int) -> list[str]:
    args = ["ablate", "strategy", "--data", data, "--out", str(out), "--seeds", "0,1,2"]
    args += ["--epochs", str(opts.epochs), "--steps-K", str(opts.K), "--device", "cpu"]
    args += [] if opts.compile else ["--no-compile"]
    if procs == 0:  # the plain command
        return [sys.executable, "-m", "diffatr.cli", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(procs), "-m", "diffatr.cli", *args]  # fmt: skip


def timed(cmd: list[str]) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    t = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if run.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{run.stdout}\n{run.stderr}")
    return seconds, run.stdout


def claim_ms(root: Path, n: int = 200) -> float:
    """Claim and release (as done) n free runs in turn: ms each."""
    claims = Claims()
    folders = [root / f"run{i}" for i in range(n)]
    for f in folders:
        f.mkdir(parents=True)
    t = time.perf_counter()
    for f in folders:
        claims.take(f)
        (f / "done.json").write_text("{}")
        claims.release(f)
    return 1000 * (time.perf_counter() - t) / n


def records(out: Path) -> list[dict]:
    rows = json.loads((out / "strategy" / "results.json").read_text())["records"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.02, help="fraction of AudioCaps' sizes")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--procs", type=int, default=2, help="torchrun processes")
    parser.add_argument("--steps-K", dest="K", type=int, default=50, help="diffusion steps")
    parser.add_argument("--compile", action="store_true", help="torch.compile (slow warm-up)")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = caches(root, args.scale)
        one, _ = timed(command(data, root / "one", args, 0))
        many, out = timed(command(data, root / "many", args, args.procs))
        print(f"strategy, 3 seeds, scale {args.scale}, {args.epochs} epoch(s), K={args.K}:")
        print(f"  1 process (plain command): {one:.1f} s")
        print(f"  {args.procs} processes (torchrun):  {many:.1f} s  ({one / many:.2f}x)")
        same = records(root / "one") == records(root / "many")
        print(f"  every record equal: {same} (exact only with equal thread counts)")
        for line in out.splitlines():
            if m := re.search(r"\[rank (\d+)/\d+\] (\d+) run\(s\) done here.*?; (.*)$", line):
                print(f"  rank {m[1]}: {m[2]} runs; {m[3]}")
        print(f"claim + release of a free run: {claim_ms(root / 'claims'):.2f} ms")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
