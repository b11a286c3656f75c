"""Benchmark: evaluation time and peak memory at 50,000 captions x 10,000 clips.

Builds a synthetic joint-space cache (10,000 clips x 5 captions, D = 512) in a temporary
folder, then runs `diffatr evaluate` (paper protocol, both directions) in a child process per
--max-elements setting and reports wall time and the child's peak resident memory. The full
similarity matrix would be 50,000 x 10,000 x 4 bytes = 2 GB; the evaluation never holds it.

    python bench/bench_evaluate.py                       # the README's numbers
    python bench/bench_evaluate.py --clips 2000          # quicker
    python bench/bench_evaluate.py --max-elements 4194304 --against 6ff1fa8 --rounds 3
        # this tree and the package at a git commit, alternating, in one run
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from diffatr.cache import SyntheticConfig, make_synthetic

# Peak resident memory of the current process. VmHWM belongs to the process's own address space;
# ru_maxrss would be wrong here, since Linux carries it over from the parent across fork + exec.
PEAK_RSS_MB = (
    "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
)


# The folder holding this tree's diffatr package.
ROOT = Path(__file__).resolve().parent.parent


def run_child(cache: Path, max_elements: int, protocol: str, package: Path = ROOT) -> dict:
    """Evaluate in a fresh process importing diffatr from `package` (a folder holding it);
    return wall seconds, that process's peak RSS and the metrics.

    The child runs in the cache's folder: `python -c` puts its working directory first on
    sys.path, so started from a repository root it would import that root's diffatr whatever
    PYTHONPATH says (before 2026-12-03, `--against` timed this tree against itself)."""
    code = (
        "import sys, json, time, resource\n"
        "import diffatr\n"
        "from diffatr.evaluate import EvalConfig, evaluate_cache\n"
        "t = time.perf_counter()\n"
        f"r = evaluate_cache(sys.argv[1], EvalConfig(protocol={protocol!r}, "
        f"max_elements={max_elements}, device='cpu'))\n"
        "u = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, "
        "'cpu_s': u.ru_utime + u.ru_stime, "
        f"'peak_rss_mb': {PEAK_RSS_MB}, "
        "'metrics': r.metrics, 'package': diffatr.__file__}))\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(package), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code, str(cache)], check=True, capture_output=True, text=True,
        env=env, cwd=cache.parent,
    )  # fmt: skip
    result = json.loads(out.stdout)
    if Path(result["package"]).resolve().parent.parent != package.resolve():
        raise RuntimeError(f"the child imported {result['package']}, not diffatr from {package}")
    return result


def baseline_rss() -> float:
    """Peak RSS of a process that only imports torch + diffatr (the floor under every run)."""
    code = f"import torch, diffatr.evaluate; print({PEAK_RSS_MB})"
    return float(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--captions-per-clip", type=int, default=5)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--max-elements", type=int, nargs="+", default=[1 << 20, 1 << 22, 1 << 24])
    parser.add_argument("--protocol", default="paper", choices=["paper", "dcase"])
    parser.add_argument(
        "--against", default=None, help="a git commit: also time its diffatr, alternating"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each (with --against)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "bench.h5"
        t = time.perf_counter()
        cfg = SyntheticConfig(
            n_clips=args.clips, captions_per_clip=(args.captions_per_clip,), dim=args.dim
        )
        make_synthetic(cache, cfg)
        n_text = args.clips * args.captions_per_clip
        print(
            f"synthetic cache: {n_text} captions x {args.clips} clips x {args.dim}-d, "
            f"written in {time.perf_counter() - t:.1f} s ({cache.stat().st_size / 2**20:.0f} MB)"
        )
        print(f"full similarity matrix would be {n_text * args.clips * 4 / 2**30:.2f} GiB")
        print(f"process floor (python + torch + diffatr imported): {baseline_rss():.0f} MB")
        packages = {"this tree": ROOT}
        if args.against:
            old = Path(tmp) / "against"
            old.mkdir()
            archive = subprocess.run(
                ["git", "archive", args.against, "diffatr"], check=True, capture_output=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            packages[args.against] = old
        for max_elements in args.max_elements:
            metrics = {}
            for round_ in range(args.rounds):
                for name, package in packages.items():
                    r = run_child(cache, max_elements, args.protocol, package)
                    metrics[name] = r["metrics"]
                    print(
                        f"{name:>10} --max-elements {max_elements:>9} "
                        f"({max_elements * 4 / 2**20:.0f} MB blocks), round {round_ + 1}: "
                        f"{r['seconds']:.1f} s (CPU {r['cpu_s']:.1f} s), "
                        f"peak RSS {r['peak_rss_mb']:.0f} MB, "
                        f"t2a R@1 {r['metrics']['t2a_R@1']:.2f}, a2t R@1 "
                        f"{r['metrics'].get('a2t_R@1', float('nan')):.2f}",
                        flush=True,
                    )
            if len(metrics) > 1:
                same = all(m == metrics["this tree"] for m in metrics.values())
                print(f"metrics identical to the last digit: {same}")


if __name__ == "__main__":
    main()
