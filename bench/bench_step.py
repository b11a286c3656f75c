"""Benchmark: the diffusion head's training step beside its floor, measured on this machine.

One step of one head (D = 512, batch 32, both directions; forward, backward, grad-norm clip,
AdamW, EMA; `HeadTrainer.step`, as `train-head` runs it) in steady state, against the floor the
same child process measures: the bytes a step must move over the copy bandwidth plus its
matrix-product FLOPs over the matrix-product rate, each at the step's thread count:

    bytes = 12 x 4 B x parameters: forward reads each weight, backward reads it again and writes
            its gradient, the optimiser reads the gradient and reads and writes the weight, both
            Adam moments and the EMA copy (the norm's second read of the gradient not counted)
    FLOPs = the matrix products of forward + backward (torch.utils.flop_counter, one step)
    copy bandwidth = 2 x 64 MB / best time of `dst.copy_(src)`; matrix rate = 2 x 1024^3 /
            best time of a 1024 x 1024 float32 matrix product

Conditions, each in a fresh child process (the thread count set before torch loads): one thread,
two threads, and the package's default thread policy quiet and then beside a competitor process
(2 threads of 512 x 512 matrix products without pause, as bench_contention.py). `--against
COMMIT` also runs that commit's diffatr (from `git archive`), alternating with this tree's in
every round. The first steps (compiling, or loading inductor's cached code) are timed apart.
Beside the competitor the scheduler's time slices (~100 ms) alternate steps between ~1x and ~2x
the one-thread time, so a window of 40 steps gave 2.6-3.1x of quiet where 150 steps gave
1.9-2.2x in the same hour (2026-12-08): the default is 150 steps. Across later runs 150 steps
gave 1.6-3.2x: beside a 2-thread competitor the ratio sits at ~2.5x (docs/training-step.md).
Reported: wall ms per step (median / mean), the floor, their ratio, and the median CPU ms of the
process per step (on one thread, robust to time the other processes take from it).
`--epochs` times `diffatr train-head` from the shell on 8,000 synthetic pairs: its epoch 1
(compiling) against epoch 2 (steady state), as the command prints them.

    python bench/bench_step.py                         # this tree, 1 and 2 threads, contended
    python bench/bench_step.py --against 9f26041 --rounds 2
    python bench/bench_step.py --epochs                # also train-head's epoch 1 vs epoch 2
    python bench/bench_step.py --epochs --conditions ""    # train-head's epochs only
    python bench/bench_step.py --against 9f26041 --in-process 10   # CPU time, one process

`--in-process` compares this tree's forward + backward and optimiser step (the trainer's fast
path: `CompiledLoss.losses_and_grads`, written out or compiled) with those of the commit's
`stacked.py` and `optim.py` (loaded beside them) in one process on one thread, alternating, in
CPU time of the thread: usable on a loaded machine, where wall times are not.
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

ROOT = Path(__file__).resolve().parent.parent
COMPETITOR = (
    "import torch\n"
    "torch.set_num_threads(2)\n"
    "a = torch.randn(512, 512); b = torch.randn(512, 512)\n"
    "while True:\n"
    "    a = (a @ b) * 1e-3\n"
)
CONDITIONS = {  # name: (DIFFATR_THREADS, OMP_NUM_THREADS, with a competitor)
    "1 thread": ("1", "1", False),
    "2 threads": ("2", "2", False),
    "default policy": ("adaptive", "2", True),
}


def best(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def floor(trainer, text, audio) -> dict:
    """This process's floor for one step at its thread count (see the module docstring)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from diffatr.diffusion_head.stacked import group_losses

    src, dst = torch.randn(16 << 20), torch.empty(16 << 20)  # 64 MB each
    bandwidth = 2 * src.numel() * 4 / best(lambda: dst.copy_(src), 5)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    rate = 2 * 1024**3 / best(lambda: a @ b, 5)
    params = sum(p.numel() for p in trainer.pair.leaves)
    k, eps = trainer._draws(len(text), torch.Generator().manual_seed(0))
    q, c = torch.stack([text, audio]), torch.stack([audio, text])
    with FlopCounterMode(display=False) as counter:
        args = (trainer.pair.step_table, q, c, k, eps, trainer.abar, trainer.cfg.logit_scale)
        group_losses(trainer.pair.params, *args).sum().backward()
    for p in trainer.pair.leaves:
        p.grad = None
    flops = counter.get_total_flops()
    nbytes = 12 * 4 * params
    return {
        "params": params, "bytes": nbytes, "flops": flops, "gb_s": bandwidth / 1e9,
        "gflop_s": rate / 1e9, "floor_ms": 1000 * (nbytes / bandwidth + flops / rate),
    }  # fmt: skip


def worker(steps: int, contended: bool) -> None:
    """In the child: warm up, measure the floor, time `steps` steps (then beside a competitor)."""
    import torch

    import diffatr
    from diffatr.device import flush_denormal
    from diffatr.diffusion_head import HeadConfig
    from diffatr.diffusion_head.trainer import HeadTrainer
    from diffatr.malloc import retained_memory
    from diffatr.threads import tick, training_threads

    g = torch.Generator().manual_seed(0)
    pool = [(torch.randn(32, 512, generator=g), torch.randn(32, 512, generator=g))
            for _ in range(8)]  # fmt: skip
    out = {"package": diffatr.__file__}
    with flush_denormal(), training_threads(), retained_memory():
        trainer = HeadTrainer(512, HeadConfig(), total_steps=1_000_000)
        t = time.perf_counter()
        for i in range(3):
            trainer.step(*pool[i % 8], g)
        out["warmup_s"] = time.perf_counter() - t
        out |= floor(trainer, *pool[0])
        out["threads"] = torch.get_num_threads()
        for condition in ("quiet", "contended") if contended else ("quiet",):
            competitor = None
            if condition == "contended":
                competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR])
                time.sleep(1.0)  # let it start its loop
            try:
                times, cpu = [], []
                for i in range(steps):
                    t, c = time.perf_counter(), time.process_time()
                    tick()  # the thread policy, as run_epoch applies it
                    trainer.step(*pool[i % 8], g)
                    times.append(time.perf_counter() - t)
                    cpu.append(time.process_time() - c)
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
            times.sort()
            cpu.sort()
            out[condition] = {
                "cpu_ms": 1000 * cpu[len(cpu) // 2],
                "median_ms": 1000 * times[len(times) // 2],
                "mean_ms": 1000 * sum(times) / len(times),
                "threads_at_end": torch.get_num_threads(),
            }
    print(json.dumps(out))


def run_child(package: Path, condition: str, steps: int, cwd: Path) -> dict:
    policy, omp, contended = CONDITIONS[condition]
    env = dict(os.environ, DIFFATR_THREADS=policy, OMP_NUM_THREADS=omp)
    env["PYTHONPATH"] = os.pathsep.join([str(package), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--steps", str(steps)]
    done = subprocess.run(
        cmd + (["--contended"] if contended else []), env=env, cwd=cwd, capture_output=True,
        text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{condition}: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["package"]).resolve().parent.parent != package.resolve():
        raise RuntimeError(f"the child imported {result['package']}, not diffatr from {package}")
    return result


def old_modules(commit: str, tmp: Path):
    """`stacked.py` and `optim.py` of `commit`, importable beside this tree's: their relative
    imports made absolute (this tree's helpers) and their custom ops renamed."""
    import importlib.util

    mods = []
    for name in ("stacked", "optim"):
        src = subprocess.run(
            ["git", "show", f"{commit}:diffatr/diffusion_head/{name}.py"], check=True,
            capture_output=True, text=True, cwd=ROOT,
        ).stdout  # fmt: skip
        src = src.replace("from .. import", "from diffatr import")
        src = src.replace("from ..", "from diffatr.")
        src = src.replace("from . import", "from diffatr.diffusion_head import")
        src = src.replace("from .", "from diffatr.diffusion_head.")
        src = src.replace('"diffatr::', '"diffatr_against::')
        path = tmp / f"against_{name}.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(f"against_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods


def in_process(commit: str, rounds: int, tmp: Path) -> None:
    """This tree's fast forward + backward and optimiser step against `commit`'s, in one
    process on one thread, alternating every 6 steps; CPU time of the thread per step."""
    import torch

    from diffatr.device import flush_denormal
    from diffatr.diffusion_head import HeadConfig, optim, stacked
    from diffatr.diffusion_head.trainer import HeadTrainer
    from diffatr.malloc import retained_memory

    torch.set_num_threads(1)
    old_stacked, old_optim = old_modules(commit, tmp)
    cfg = HeadConfig()
    trainer = HeadTrainer(512, cfg, total_steps=1_000_000)
    g = torch.Generator().manual_seed(0)
    text, audio = torch.randn(32, 512, generator=g), torch.randn(32, 512, generator=g)
    k, eps = trainer._draws(32, g)
    args = (trainer.pair.step_table, torch.stack([text, audio]), torch.stack([audio, text]), k,
            eps, trainer.abar, cfg.logit_scale)  # fmt: skip
    leaves = trainer.pair.leaves
    ema = [x.detach().clone() for x in leaves]
    paths = {}
    for name, st, op in (("this tree", stacked, optim), (commit, old_stacked, old_optim)):
        opt = op.FusedAdamWEMA(leaves, [e.clone() for e in ema], cfg.weight_decay, cfg.grad_clip,
                               cfg.ema)  # fmt: skip
        paths[name] = (st.CompiledLoss(32, True).losses_and_grads, opt)
    times = {(name, part): [] for name in paths for part in ("fwd+bwd", "optimiser")}
    with flush_denormal(), retained_memory():
        for r in range(rounds + 1):  # round 0 compiles and warms up, untimed
            for name in list(paths)[:: 1 if r % 2 else -1]:
                losses, opt = paths[name]
                for _ in range(6):
                    c0 = time.thread_time()
                    losses(trainer.pair.params, *args)  # gradients into the leaves
                    c1 = time.thread_time()
                    opt.step([1e-6])
                    c2 = time.thread_time()
                    if r:
                        times[(name, "fwd+bwd")].append(c1 - c0)
                        times[(name, "optimiser")].append(c2 - c1)
    print(f"in one process, 1 thread, CPU ms per step (median / min of {6 * rounds}):")
    for (name, part), t in times.items():
        t.sort()
        print(f"  {name[:10]:<10} {part:<10} {1000 * t[len(t) // 2]:6.2f} / {1000 * t[0]:6.2f}")


def epochs(tmp: Path) -> None:
    """`diffatr train-head` on 8,000 pairs, two epochs, from the shell: the printed epoch times."""
    from diffatr.cache import SyntheticConfig, make_synthetic

    train, val = tmp / "train.h5", tmp / "val.h5"
    make_synthetic(
        train, SyntheticConfig(n_clips=8000, captions_per_clip=(1,), seed=2), split="train"
    )
    make_synthetic(val, SyntheticConfig(n_clips=50, seed=3), split="val")
    cmd = ["diffatr", "train-head", str(train), "--val", str(val), "--out", str(tmp / "h.pt")]
    t = time.perf_counter()
    done = subprocess.run([*cmd, "--epochs", "2"], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    seconds = [float(s) for s in re.findall(r"\(([\d.]+) s\)", done.stdout)]
    print(f"train-head, 8,000 pairs (250 batches), 2 epochs: {wall:.1f} s wall; epoch 1 "
          f"{seconds[0]:.1f} s, epoch 2 {seconds[1]:.1f} s: compiling costs "
          f"{seconds[0] - seconds[1]:.1f} s over the steady state")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=150,
        help="timed steps per condition (and beside the competitor)",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--against", default=None, help="a git commit: also time its diffatr")
    parser.add_argument("--epochs", action="store_true", help="also time train-head's epochs")
    parser.add_argument(
        "--in-process", type=int, default=0, metavar="ROUNDS",
        help="with --against: only the in-process CPU-time comparison, this many rounds",
    )  # fmt: skip
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contended", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.contended)
        return
    print(f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()}")
    if args.in_process and args.against:
        with tempfile.TemporaryDirectory() as tmp:
            in_process(args.against, args.in_process, Path(tmp))
        print(f"load average at end {os.getloadavg()}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        packages = {"this tree": ROOT}
        if args.against:
            old = Path(tmp) / "against"
            old.mkdir()
            archive = subprocess.run(
                ["git", "archive", args.against, "diffatr"], check=True, capture_output=True,
                cwd=ROOT,
            )  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
            packages[args.against] = old
        if args.conditions:
            print(f"ms per step (median / mean of {args.steps}); floor = bytes / copy bandwidth "
                  "+ FLOPs / matrix rate, measured in the same child")  # fmt: skip
            head = f"{'condition':<15} {'package':<10} {'step':>15} {'floor':>6} {'ratio':>6}"
            print(f"{head} {'GB/s':>5} {'GFLOP/s':>7} {'warm-up':>8} {'CPU':>6}  beside a "
                  "competitor")  # fmt: skip
        for _ in range(args.rounds):
            for condition in filter(None, args.conditions.split(",")):
                for name, package in packages.items():
                    r = run_child(package, condition, args.steps, Path(tmp))
                    q = r["quiet"]
                    line = (
                        f"{condition:<15} {name[:10]:<10} {q['median_ms']:6.1f} / "
                        f"{q['mean_ms']:6.1f} {r['floor_ms']:6.1f} "
                        f"{q['median_ms'] / r['floor_ms']:5.2f}x {r['gb_s']:5.1f} "
                        f"{r['gflop_s']:7.1f} {r['warmup_s']:7.1f}s {q['cpu_ms']:6.1f}"
                    )
                    if "contended" in r:
                        c = r["contended"]
                        line += (
                            f"  {c['median_ms']:6.1f} / {c['mean_ms']:6.1f} "
                            f"({c['median_ms'] / q['median_ms']:.2f}x of quiet; threads "
                            f"{q['threads_at_end']} -> {c['threads_at_end']})"
                        )
                    print(line, flush=True)
        if args.conditions:
            print(f"parameters {r['params']:,}, bytes {r['bytes'] / 1e6:.0f} MB, "
                  f"FLOPs {r['flops'] / 1e9:.2f} G per step")  # fmt: skip
        if args.epochs:
            epochs(Path(tmp))
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
