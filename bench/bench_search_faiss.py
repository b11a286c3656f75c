"""Benchmark: `diffatr search` on a large library, exact vs the FAISS index beside the cache:
query latency and recall@10 of each index against exact search.

Writes a joint-space cache of --clips synthetic clips (--dim-d, L2-normalised, drawn around
--clusters centres so neighbours mean something) in a temporary folder, and --queries query
vectors (clips of the cache plus noise). Every path is `experiments.search.Searcher` as
`search` and `serve` run it, minus embedding the query (the same for all paths):

  exact     cosine against every clip (`Searcher.rank` with no index)
  FACTORY   the index built by `search --build-index FACTORY` beside the cache, loaded and
            checked (rows_sha256) at start, searched through `Searcher.rank`

Per path: start-up (build and load; for exact: loading the clips), median and 95th-percentile
latency of one query at a time, and recall@10: the share of exact search's top 10 that the
index returns in its top 10, over all queries. The load average (/proc/loadavg) is printed at
the start and the end: the machine is shared.

    python bench/bench_search_faiss.py                      # 100,000 x 512, the docs' numbers
    python bench/bench_search_faiss.py --clips 20000 --factory HNSW32
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from diffatr.cache import CacheWriter
from diffatr.experiments.search import SearchConfig, Searcher

DEFAULT_FACTORIES = ("Flat", "IVF1024,Flat/8", "IVF1024,Flat/32", "HNSW32")  # "/N": nprobe N


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_cache(path: Path, n: int, dim: int, clusters: int, rng) -> np.ndarray:
    centres = unit(rng.standard_normal((clusters, dim)))
    spread = 0.5 * rng.standard_normal((n, dim)) / np.sqrt(dim)  # norm ~0.5 around a centre
    rows = unit(centres[rng.integers(0, clusters, n)] + spread)
    with CacheWriter(path, dataset="bench", split="library", space="joint") as w:
        w.set_attrs("audio", encoder="synthetic", feature_kind="joint", settings={})
        w.add_audio([f"clip{i:06d}.wav" for i in range(n)], rows)
    return rows


def time_path(cache: Path, cfg: SearchConfig, queries: torch.Tensor, k: int = 10):
    t0 = time.perf_counter()
    searcher = Searcher(str(cache), cfg, text=False, audio=False)
    start = time.perf_counter() - t0
    searcher.rank(queries[:1], rerank=False, k=k)  # warm-up
    latencies, top = [], []
    for q in queries:
        t0 = time.perf_counter()
        _, rows = searcher.rank(q[None], rerank=False, k=k)
        latencies.append(time.perf_counter() - t0)
        top.append(rows[0])
    return start, np.array(latencies), np.array(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--factory", action="append", help="index_factory[/nprobe]; repeatable")
    args = ap.parse_args()
    factories = args.factory or list(DEFAULT_FACTORIES)
    print(f"load average at start: {loadavg()}; {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-faiss-") as tmp:
        cache = Path(tmp) / "library.h5"
        t0 = time.perf_counter()
        rows = write_cache(cache, args.clips, args.dim, args.clusters, rng)
        print(f"wrote {args.clips} x {args.dim} clips in {time.perf_counter() - t0:.1f} s")
        picks = rng.integers(0, args.clips, args.queries)
        noise = 0.3 * rng.standard_normal((args.queries, args.dim)) / np.sqrt(args.dim)
        queries = torch.from_numpy(unit(rows[picks] + noise))
        results = {}
        start, lat, exact = time_path(cache, SearchConfig(index="exact"), queries)
        results["exact"] = (start, lat, 1.0)
        last = None
        for spec in factories:
            factory, _, nprobe = spec.partition("/")
            if factory != last:  # another nprobe of the index just built: no rebuild
                cfg = SearchConfig(index="build", index_factory=factory)
                built, _, _ = time_path(cache, cfg, queries[:1])
                last = factory
            cfg = SearchConfig(index="auto", nprobe=int(nprobe or 0))
            start, lat, top = time_path(cache, cfg, queries)
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, exact, strict=True)])
            results[spec] = (built, start, lat, recall)
    print(f"\n{args.clips:,} clips x {args.dim}-d, {args.queries} queries one at a time, k = 10\n")
    print("| search | build s | start s | median ms | p95 ms | recall@10 |")
    print("|---|---:|---:|---:|---:|---:|")
    start, lat, _ = results.pop("exact")
    ms = 1e3 * lat
    print(
        f"| exact | - | {start:.2f} | {np.median(ms):.2f} | {np.percentile(ms, 95):.2f} | 1.000 |"
    )
    for spec, (built, start, lat, recall) in results.items():
        ms = 1e3 * lat
        name = spec.replace("/", ", nprobe ")
        print(f"| faiss {name} | {built:.1f} | {start:.2f} | {np.median(ms):.2f} | "
              f"{np.percentile(ms, 95):.2f} | {recall:.3f} |")  # fmt: skip
    print(f"\nload average at end: {loadavg()}")


if __name__ == "__main__":
    main()
