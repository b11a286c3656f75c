"""Benchmark: export to Parquet / safetensors / FAISS and import back, 10,000 clips x 5 captions.

Builds a synthetic joint-space cache (D = 512) in a temporary folder, then times in this
process: `export` in each format, and `import` of the Parquet and npz exports (which also checks
the round trip: the imported embeddings equal the cache's). Prints one JSON line per step.

    python bench/bench_export.py                 # the README's numbers
    python bench/bench_export.py --clips 2000    # quicker
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from diffatr.cache import Cache, SyntheticConfig, export, import_embeddings, make_synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "bench.h5"
        make_synthetic(
            cache, SyntheticConfig(n_clips=args.clips, captions_per_clip=(5,), dim=args.dim)
        )
        files = {}
        for fmt in ("npz", "parquet", "safetensors", "faiss"):
            t = time.perf_counter()
            files[fmt] = export(cache, fmt, root / fmt)
            mb = sum(p.stat().st_size for p in files[fmt]) / 1e6
            seconds = time.perf_counter() - t
            print(
                json.dumps(
                    {"step": f"export {fmt}", "seconds": round(seconds, 2), "MB": round(mb, 1)}
                )
            )
        with Cache(cache) as c:
            want = c.embeddings("text")[:]
        for fmt in ("parquet", "npz"):
            audio, text = (
                (files[fmt][0], files[fmt][1]) if fmt == "parquet" else (files[fmt][0],) * 2
            )
            t = time.perf_counter()
            import_embeddings(root / f"back_{fmt}.h5", audio, text)
            seconds = time.perf_counter() - t
            with Cache(root / f"back_{fmt}.h5") as c:
                same = bool(np.array_equal(c.embeddings("text")[:], want))
            print(json.dumps({"step": f"import {fmt}", "seconds": round(seconds, 2), "same": same}))


if __name__ == "__main__":
    main()
