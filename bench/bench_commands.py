"""Benchmark: the commands as users run them, beside the steady-state kernels, in one run.

Builds an AudioCaps-test-sized joint cache (957 clips x 5 captions, D = 512) and a head
checkpoint (random weights, as bench_head.py's) in a temporary folder, then times from the
shell (a fresh `python -m diffatr.cli` process per run, wall time):

    evaluate te.h5                              cosine only
    evaluate te.h5 --head head.pt               empty compile cache (first use), then warm;
                                                once more on a "fresh machine" (an empty
                                                TMPDIR too: no precompiled header either)
    evaluate te.h5 --head head.pt --no-compile  no C compiler: the numba loop (first use,
                                                then warm)
    evaluate --help                             start-up (imports)

and, in a child process, the kernels in steady state: the same re-ranking (both directions,
top-32, all K = 50 steps) through `DiffusionScores` once compiled code is loaded (the C loop),
and with --no-compile (the numba loop).
Each command runs `--runs` times (first use: `--cold-runs` times, each with its own empty
TORCHINDUCTOR_CACHE_DIR, numba's NUMBA_CACHE_DIR inside it); min / median / max are printed
with the issue-24 goals:

    warm        <= kernels (compiled) + cosine-only evaluate + 1 s
    first use   <= 1.5 x warm
    no-compile  <= 2 x warm

`--ablate` adds `diffatr ablate strategy` over the same test cache (one seed, a head trained one
epoch on a small synthetic training split, no baselines), once in an empty compile cache, then
`--runs` times warm and `--runs` times with `--no-compile`, each into a new folder; from each
run's `done.json` it takes the seconds of the evaluation runs themselves (Gen: loading the head
and the DDIM re-ranking; Dis: cosine), in the ablation's process, and prints the goals per run:
Gen <= kernels + Dis + 1 s, first use <= 1.5x warm, `--no-compile` <= 2x warm.

`--competing` runs everything again beside one competing 2-thread process (bench_contention.py's
matrix products) and prints both. `--demo` adds `diffatr demo` (quiet and, with --competing,
beside the competitor): once in an empty compile cache (first use), then `--runs` times
warm, and once on a "fresh machine" (an empty TMPDIR too: inductor's precompiled header, which
lives there and not in TORCHINDUCTOR_CACHE_DIR, is built again, as after an install). The load
average is printed at the start and the end.

    python bench/bench_commands.py                     # ~4 min on a quiet 2-core machine
    python bench/bench_commands.py --competing --demo --ablate  # issue 24 but the step, ~15 min
    python bench/bench_commands.py --clips 300 --runs 1   # a quick look
    python bench/bench_commands.py --query-blocks 256,64,1024   # kernels per block size too
"""

import argparse
import json
import os
import statistics
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

# The child that times the kernels: steady state, compiled code loaded (bench_head.py's infer).
KERNELS = """
import json, sys, time, torch
sys.path.insert(0, 'bench')
from bench_head import random_head
from diffatr.cache import load_tensors
from diffatr.diffusion_head import DiffusionScores, RerankConfig
d = load_tensors(sys.argv[1])
head = random_head(d.text.shape[1])
out = {}
blocks = [int(b) for b in sys.argv[3].split(',')]
runs = [(f'compiled, query_block {b}', True, b) for b in blocks]
runs.append(('no-compile', False, blocks[0]))
for name, compiled, block in runs:
    cfg = RerankConfig(topk=32, compiled=compiled, query_block=block)
    s = DiffusionScores(d.text, d.audio, head, cfg)
    s.t2a(0, 8), s.a2t(0, 8)  # compile or load the compiled code outside the timing
    times = []
    for _ in range(int(sys.argv[2])):
        t = time.perf_counter()
        s.t2a(0, s.n_text), s.a2t(0, s.n_audio)
        times.append(time.perf_counter() - t)
    out[name] = times
print(json.dumps(out))
"""


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def env(cache_dir: Path | None, tmpdir: Path | None = None) -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    if cache_dir is not None:
        e["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
        # numba's cache too (else beside the sources): the --no-compile loop is built there
        e["NUMBA_CACHE_DIR"] = str(cache_dir / "numba")
    if tmpdir is not None:  # inductor's precompiled headers live in TMPDIR/torchinductor_USER
        e["TMPDIR"] = str(tmpdir)
    return e


def timed(args: list[str], cwd: Path, cache_dir: Path | None, tmpdir: Path | None = None) -> float:
    """Wall seconds of one command in a fresh process (it must succeed)."""
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env(cache_dir, tmpdir),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    # each run as it ends (the whole benchmark takes ~30 min; the table comes at each section's end)
    label = " ".join(Path(a).name if "/" in a else a for a in args[2:])
    cache = "default cache" if cache_dir is None else Path(cache_dir).name
    print(f"    ran `diffatr {label}` ({cache}): {seconds:.1f} s", file=sys.stderr, flush=True)
    return seconds


def stats(times: list[float]) -> str:
    if len(times) == 1:
        return f"{times[0]:7.1f} s"
    return (
        f"{min(times):7.1f} s  median {statistics.median(times):6.1f}  max {max(times):6.1f}"
        f"  ({len(times)} runs)"
    )


def make_inputs(folder: Path, clips: int) -> None:
    """te.h5 and head.pt; tr.h5 (800 clips) and va.h5 (100) for `--ablate`."""
    code = (
        "import sys; sys.path.insert(0, 'bench')\n"
        "from bench_head import random_head\n"
        "from diffatr.cache import SyntheticConfig, make_synthetic\n"
        "from diffatr.diffusion_head.checkpoint import save_head\n"
        f"make_synthetic({str(folder / 'te.h5')!r}, SyntheticConfig(n_clips={clips}, seed=1), "
        "split='test')\n"
        f"make_synthetic({str(folder / 'tr.h5')!r}, SyntheticConfig(n_clips=800, seed=2), "
        "split='train')\n"
        f"make_synthetic({str(folder / 'va.h5')!r}, SyntheticConfig(n_clips=100, seed=3), "
        "split='val')\n"
        f"save_head({str(folder / 'head.pt')!r}, random_head(512))\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(None), check=True)


def ablate_runs(folder: Path, cache: Path, extra: list[str]) -> tuple[float, float]:
    """One `diffatr ablate strategy` into a new folder: its Gen and Dis evaluation runs' own
    seconds (their done.json)."""
    out = Path(tempfile.mkdtemp(dir=folder, prefix="ablate-"))
    data = "ac=" + ",".join(str(folder / f) for f in ("tr.h5", "va.h5", "te.h5"))
    cmd = ["-m", "diffatr.cli", "ablate", "strategy", "--data", data, "--seeds", "0"]
    timed([*cmd, "--epochs", "1", "--no-baselines", "--out", str(out), *extra], folder, cache)

    def seconds(prefix: str) -> float:
        (done,) = (out / "runs").glob(f"{prefix}*/done.json")
        return json.loads(done.read_text())["seconds"]

    return seconds("eval-diffatr-gen-"), seconds("eval-cosine-")


def measure(
    folder: Path, runs: int, cold_runs: int, demo: bool, blocks: str, ablate: bool = False
) -> dict[str, list[float]]:
    """Every command and the kernels, once each condition; {name: wall seconds per run}."""
    cli = ["-m", "diffatr.cli"]
    te, head = str(folder / "te.h5"), str(folder / "head.pt")
    warm_dir = Path(tempfile.mkdtemp(dir=folder, prefix="inductor-"))
    r: dict[str, list[float]] = {}
    r["evaluate --help"] = [timed([*cli, "evaluate", "--help"], folder, None) for _ in range(runs)]
    r["evaluate (cosine)"] = [timed([*cli, "evaluate", te], folder, None) for _ in range(runs)]
    cold = []
    for i in range(cold_runs):  # each in an empty compile cache; the first fills warm_dir
        cache = warm_dir if i == 0 else Path(tempfile.mkdtemp(dir=folder, prefix="inductor-"))
        cold.append(timed([*cli, "evaluate", te, "--head", head], folder, cache))
    r["evaluate --head, first use"] = cold
    # a machine that never compiled: inductor also builds its precompiled header, kept outside
    # the compile cache (in the temp dir) and shared by every later compile of every cache
    fresh = Path(tempfile.mkdtemp(dir=folder, prefix="tmp-"))
    r["evaluate --head, fresh machine"] = [
        timed([*cli, "evaluate", te, "--head", head], folder, fresh / "inductor", fresh)
    ]
    r["evaluate --head, warm"] = [
        timed([*cli, "evaluate", te, "--head", head], folder, warm_dir) for _ in range(runs)
    ]
    no_compile = [*cli, "evaluate", te, "--head", head, "--no-compile"]
    cache = Path(tempfile.mkdtemp(dir=folder, prefix="inductor-"))  # numba's loop built first
    r["evaluate --head --no-compile, first use"] = [timed(no_compile, folder, cache)]
    r["evaluate --head --no-compile"] = [timed(no_compile, folder, cache) for _ in range(runs)]
    print("    the kernels in steady state (one child process) ...", file=sys.stderr, flush=True)
    out = subprocess.run(
        [sys.executable, "-c", KERNELS, te, str(runs), blocks],
        cwd=ROOT,
        env=env(warm_dir),
        capture_output=True,
        text=True,
        check=True,
    )
    kernels = json.loads(out.stdout.strip().splitlines()[-1])
    first = f"compiled, query_block {blocks.split(',')[0]}"
    r["kernels, compiled (steady state)"] = kernels.pop(first)
    r["kernels, --no-compile (steady state)"] = kernels.pop("no-compile")
    r.update({f"kernels, {name}": times for name, times in kernels.items()})
    if ablate:  # per run, inside the ablation's process: Gen's and Dis's own seconds
        cache = Path(tempfile.mkdtemp(dir=folder, prefix="inductor-ablate-"))
        first = [ablate_runs(folder, cache, [])]
        warm = [ablate_runs(folder, cache, []) for _ in range(runs)]
        eager = [ablate_runs(folder, cache, ["--no-compile"]) for _ in range(runs)]
        r["ablate, Gen run, first use"] = [g for g, _ in first]
        r["ablate, Gen run, warm"] = [g for g, _ in warm]
        r["ablate, Dis run, warm"] = [d for _, d in warm]
        r["ablate, Gen run, --no-compile"] = [g for g, _ in eager]
    if demo:  # first use in an empty compile cache, then warm from what it compiled
        demo_cache = Path(tempfile.mkdtemp(dir=folder, prefix="inductor-demo-"))

        def run_demo() -> float:
            out = str(Path(tempfile.mkdtemp(dir=folder)))
            return timed([*cli, "demo", "--out", out], folder, demo_cache)

        r["demo, first use"] = [run_demo()]
        r["demo, warm"] = [run_demo() for _ in range(runs)]
        # after install on a fresh machine: inductor's precompiled header (in TMPDIR, not in
        # TORCHINDUCTOR_CACHE_DIR) is built too; the first-use run above found it built
        fresh = Path(tempfile.mkdtemp(dir=folder, prefix="tmp-demo-"))
        out = str(Path(tempfile.mkdtemp(dir=folder)))
        r["demo, fresh machine"] = [timed([*cli, "demo", "--out", out], folder,
                                          fresh / "inductor", fresh)]  # fmt: skip
    return r


def report(r: dict[str, list[float]]) -> None:
    for name, times in r.items():
        print(f"  {name:<34} {stats(times)}")
    med = {name: statistics.median(times) for name, times in r.items()}
    warm, cold = med["evaluate --head, warm"], med["evaluate --head, first use"]
    bound = med["kernels, compiled (steady state)"] + med["evaluate (cosine)"] + 1.0
    print(
        f"  goals (medians): warm {warm:.1f} s vs kernels + cosine + 1 s = {bound:.1f} s; "
        f"first use {cold / warm:.2f}x warm (<= 1.5); "
        f"--no-compile {med['evaluate --head --no-compile'] / warm:.2f}x warm (<= 2)"
    )
    if "ablate, Gen run, warm" in med:
        gen = med["ablate, Gen run, warm"]
        bound = med["kernels, compiled (steady state)"] + med["ablate, Dis run, warm"] + 1.0
        print(f"  ablate per run (medians): Gen {gen:.1f} s vs kernels + Dis + 1 s = "
              f"{bound:.1f} s; first use {med['ablate, Gen run, first use'] / gen:.2f}x warm "
              f"(<= 1.5); --no-compile {med['ablate, Gen run, --no-compile'] / gen:.2f}x warm "
              "(<= 2)")  # fmt: skip
    if "demo, warm" in med:
        print(f"  demo (medians): warm {med['demo, warm']:.1f} s (<= 60 s quiet), first use "
              f"{med['demo, first use']:.1f} s, fresh machine "
              f"{med['demo, fresh machine']:.1f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=957, help="clips of the test cache (x5)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each warm command")
    parser.add_argument("--cold-runs", type=int, default=1, help="runs with an empty cache")
    parser.add_argument("--competing", action="store_true", help="also beside a competitor")
    parser.add_argument("--demo", action="store_true", help="also time `diffatr demo`")
    parser.add_argument(
        "--ablate", action="store_true", help="also time `diffatr ablate`'s evaluation runs"
    )
    parser.add_argument(
        "--query-blocks",
        default="256",
        help="query_block of the kernels, comma-separated (the first is the goals'; default: "
        "the commands' default, 256); e.g. 256,64,1024 compares block sizes in one run",
    )
    args = parser.parse_args()
    print(f"{load()} at the start; {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench-commands-") as tmp:
        folder = Path(tmp)
        make_inputs(folder, args.clips)
        print(f"cache: {args.clips} clips x 5 captions x 512-d; top-32, K = 50, both directions")
        print("quiet:")
        report(
            measure(folder, args.runs, args.cold_runs, args.demo, args.query_blocks, args.ablate)
        )
        if args.competing:
            rival = subprocess.Popen([sys.executable, "-c", COMPETITOR])
            try:
                time.sleep(2)  # let it start its threads
                print("beside one competing 2-thread process:")
                report(
                    measure(
                        folder, args.runs, args.cold_runs, args.demo, args.query_blocks, args.ablate
                    )
                )
            finally:
                rival.kill()
                rival.wait()
    print(f"{load()} at the end")


if __name__ == "__main__":
    main()
