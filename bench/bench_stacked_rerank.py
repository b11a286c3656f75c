"""Benchmark: validating several heads on one cache, stacked against head by head.

H heads (random weights at the training init scale; D 512, K 50) re-rank the top-32 of an
AudioCaps-sized validation split (495 clips x 5 captions, synthetic) in both directions through
`paper_protocol`, as `train_head` validates after each epoch: head by head (`DiffusionScores`
each) and together (`stacked_rerank.stacked_scores`), alternately, compiled (warm-up outside
the timing). Wall time and, on one thread, CPU time of the thread.

    python bench/bench_stacked_rerank.py --heads 3 --repeat 2
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from diffatr.cache import SyntheticConfig, load_tensors, make_synthetic
from diffatr.diffusion_head import DiffusionScores, HeadConfig, RerankConfig
from diffatr.diffusion_head.checkpoint import Head, new_denoiser
from diffatr.diffusion_head.stacked_rerank import stacked_scores
from diffatr.evaluate import paper_protocol


def heads(n: int, dim: int = 512, K: int = 50) -> list[Head]:
    out = []
    for s in range(n):
        torch.manual_seed(s)
        out.append(Head(HeadConfig(K=K, seed=s), new_denoiser(dim, K).eval(),
                        new_denoiser(dim, K).eval(), meta={}))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="timed rounds of each way")
    parser.add_argument("--threads", type=int, default=None, help="[torch's default]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{'CPU' if clock is time.thread_time else 'wall'} time; "
          f"load average at start {os.getloadavg()}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "val.h5"
        make_synthetic(path, SyntheticConfig(n_clips=495, captions_per_clip=(5,), seed=1))
        val = load_tensors(path)
    hs = heads(args.heads)
    cfgs = [RerankConfig(seed=h.config.seed) for h in hs]

    def one_by_one():
        return [paper_protocol(DiffusionScores(val.text, val.audio, h, c), val.audio_index)
                for h, c in zip(hs, cfgs, strict=True)]  # fmt: skip

    def together():
        scores = stacked_scores(val.text, val.audio, hs, cfgs)
        return [paper_protocol(s, val.audio_index) for s in scores]

    ways = {"head by head": one_by_one, "stacked": together}
    results = {name: fn() for name, fn in ways.items()}  # compile warm-up
    for a, b in zip(*results.values(), strict=True):
        assert max(abs(a[k] - b[k]) for k in a) < 1.0, (a, b)  # near-ties may flip a query
    seconds = dict.fromkeys(ways, 0.0)
    for _ in range(args.repeat):
        for name, fn in ways.items():
            t = clock()
            fn()
            seconds[name] += (clock() - t) / args.repeat
    for name, s in seconds.items():
        print(f"  {name:<13} {s:7.2f} s for {args.heads} heads ({s / args.heads:.2f} s per head)")
    print(f"  head by head / stacked: {seconds['head by head'] / seconds['stacked']:.2f}x")
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
