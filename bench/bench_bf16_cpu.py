"""Benchmark: bf16 autocast against fp32 on this CPU, for the `--precision bf16` warning
(`diffatr/extract/bf16.py`): a Cnn14-like conv stack (the joint Cnn14's first four blocks:
two 3x3 convs + BN + ReLU + 2x2 average pool each, 64-128-256-512 channels) on a batch of
log-mel images, forward only, fp32 and then bf16 autocast, interleaved, median of the repeats.

Prints whether /proc/cpuinfo lists a native bf16 flag, the load average at start and end, and
each precision's clips/s with their ratio.

    python bench/bench_bf16_cpu.py                 # 2 clips of 2.56 s (256 x 64 log-mel)
    python bench/bench_bf16_cpu.py --clips 1 --frames 64 --repeats 3   # quicker (busy machine)

Emulated bf16 is slow: on a CPU without bf16 instructions the defaults take minutes.
"""

import argparse
import os
import statistics
import time

import torch
from torch import nn

from diffatr.extract.bf16 import native_bf16


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.AvgPool2d(2),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    print(f"native bf16 in /proc/cpuinfo: {native_bf16()}; torch threads {torch.get_num_threads()}")
    torch.manual_seed(0)
    net = nn.Sequential(block(1, 64), block(64, 128), block(128, 256), block(256, 512)).eval()
    x = torch.randn(args.clips, 1, args.frames, 64)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with torch.inference_mode():
        for precision in times:  # warm-up
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                net(x)
        for _ in range(args.repeats):
            for precision in times:
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    net(x)
                times[precision].append(time.perf_counter() - t)
    speed = {p: args.clips / statistics.median(ts) for p, ts in times.items()}
    for p, s in speed.items():
        print(f"{p}: {s:.2f} clips/s (median of {args.repeats})")
    print(f"bf16 / fp32 speed: {speed['bf16'] / speed['fp32']:.2f}x")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
