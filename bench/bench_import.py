"""What `import diffatr` costs, against the first use of the API (which loads torch).

    python bench/bench_import.py [--rounds 5]

Each statement runs in a fresh interpreter, the rounds alternating, and the wall time of the
whole child process is reported (median and range), beside a bare `python -c pass`.
"""

import argparse
import statistics
import subprocess
import sys
import time

STATEMENTS = {
    "python -c pass": "pass",
    "import diffatr": "import diffatr",
    "import diffatr; diffatr.open_cache (torch, h5py)": "import diffatr; diffatr.open_cache",
    "import diffatr.cli (the CLI's start-up)": "import diffatr.cli",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in STATEMENTS}
    for _ in range(args.rounds):
        for name, code in STATEMENTS.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(
            f"{name:<52} median {statistics.median(values) * 1000:7.0f} ms "
            f"({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"
        )


if __name__ == "__main__":
    main()
