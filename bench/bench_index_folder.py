"""Benchmark: indexing a sound library folder (`diffatr extract --audio-dir DIR --out LIB.h5
--audio-only`, no caption file) on this machine's CPU.

Synthesises --files short clips (1 to 2 s in 0.25 s steps, noise plus tones) as WAV 32 kHz, FLAC
44.1 kHz and OGG 48 kHz in --folders nested sub-folders of a temporary folder, then times:

  listing   `extract.folder.library_files`: the recursive walk alone
  index     the whole `extract(None, DIR, OUT, cfg)` run: listing, decoding and resampling in
            --workers DataLoader processes, the encoder in batches of equal-length clips, parts,
            merge. --encoder cnn14: CNN14 with random weights (random:0, nothing is
            downloaded); --encoder tiny-joint: the tests' tiny WavCaps-layout joint model
            (tests/joint_helpers.py, random weights), which measures the pipeline rather than
            the network

and checks the cache holds one row per file, in sorted path order. The load average
(/proc/loadavg) is printed at the start and the end: the machine is shared.

    python bench/bench_index_folder.py                 # 1,000 files, the docs' numbers
    python bench/bench_index_folder.py --files 64      # a quick look
    python bench/bench_index_folder.py --encoder tiny-joint
"""

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf

from diffatr.cache import Cache
from diffatr.extract import AudioEncoderConfig, ExtractConfig, extract
from diffatr.extract.folder import library_files
from diffatr.extract.joint import JointConfig

FORMATS = ((".wav", 32000), (".flac", 44100), (".ogg", 48000))


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def synthesise(root: Path, n: int, folders: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        ext, rate = FORMATS[i % len(FORMATS)]
        seconds = 1.0 + 0.25 * rng.integers(0, 5)
        t = np.arange(int(seconds * rate)) / rate
        x = sum(0.2 * np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 4000, size=2))
        x = (x + 0.05 * rng.normal(size=t.shape)).astype(np.float32)
        folder = root / f"set{i % folders:02d}" / f"take{(i // folders) % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"sound{i:05d}{ext}", 0.8 * x / np.abs(x).max(), rate)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--folders", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--encoder", choices=["cnn14", "tiny-joint"], default="cnn14")
    args = ap.parse_args()
    print(f"load average at start: {loadavg()}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        root = Path(tmp) / "library"
        t0 = time.perf_counter()
        synthesise(root, args.files, args.folders)
        print(f"synthesised {args.files} files in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        files = library_files(root)
        listing = time.perf_counter() - t0

        if args.encoder == "cnn14":
            audio = AudioEncoderConfig(checkpoint="random:0", precision=args.precision)
            joint = JointConfig()
        else:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from joint_helpers import text_folder, tiny_bert, wavcaps_checkpoint

            model = Path(tmp) / "wavcaps_tiny.pt"
            wavcaps_checkpoint(model)
            text = text_folder(Path(tmp), tiny_bert())
            audio = AudioEncoderConfig(precision=args.precision)
            joint = JointConfig(model=str(model), text_encoder=str(text))
        cfg = ExtractConfig(
            audio=replace(audio, device="cpu"),
            joint=joint,
            audio_only=True,
            batch_size=args.batch_size,
            workers=args.workers,
        )
        out = Path(tmp) / "library.h5"
        t0 = time.perf_counter()
        summary = extract(None, root, out, cfg, progress=False)
        seconds = time.perf_counter() - t0
        with Cache(out) as cache:
            ids = cache.audio_ids()
            rows = cache.embeddings("audio").shape
        assert ids == [clip_id for clip_id, _ in files], "the cache's rows are not the files"
        assert summary.clips == args.files and summary.clips_skipped == 0
    print("\n| step | files | seconds | files/s | ms/file |\n|---|---:|---:|---:|---:|")
    index = f"index ({args.encoder}, {args.precision})"
    for name, s in (("listing", listing), (index, seconds)):
        rate, per_file = args.files / s, 1e3 * s / args.files
        print(f"| {name} | {args.files} | {s:.2f} | {rate:,.1f} | {per_file:.2f} |")
    print(f"\ncache: {rows[0]} x {rows[1]} rows; load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
