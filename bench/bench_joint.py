"""Benchmark: joint-model audio encoding (`diffatr extract --joint-model`), clips/s, ours vs the
naive loop a user would write, fp32 and bf16 side by side in one run.

Full-size models with random weights (nothing is downloaded) and synthetic clips held in memory
(decoding is measured by bench_extract_audio.py), --clips clips of --seconds s:

  wavcaps-cnn14   Mei's Cnn14 (2x2 pool after block 6) + audio_proj (1024-d), 32 kHz
  wavcaps-htsat   HTSAT as ClapAudioEncoder (spec 256, 2-2-6-2) + audio_proj, 32 kHz
  clap            transformers' ClapModel (laion/clap-htsat-unfused sizes), 48 kHz

  naive   the original encoder called one clip at a time (for CLAP: ClapProcessor +
          ClapModel.get_audio_features per clip), under autocast for bf16
  ours    the extraction's encoder object (`.features`) on batches of --batch-size equal-length
          clips; CNN fp32 = its inference form (fast_cnn.py: BatchNorm folded, channels-last,
          Winograd for the deep convs, FFT STFT); bf16 = BatchNorm folded into the convs, bf16
          channels-last weights (CNN)

    python bench/bench_joint.py                      # the README's numbers
    python bench/bench_joint.py --clips 8 --seconds 5 --kinds clap
"""

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffatr.extract.joint.audio import CnnJointAudio
from diffatr.extract.joint.cnn import MeiCnn, MelSettings, clip_vector
from diffatr.extract.joint.config import Runtime

KINDS = ("wavcaps-cnn14", "wavcaps-htsat", "clap")


def _proj(width: int, embed: int = 1024) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, embed), nn.ReLU(), nn.Linear(embed, embed)).eval()


def _autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def cnn14(precision: str) -> tuple[Callable, Callable, int]:
    """(ours(batch), naive(clip), sample rate)."""
    torch.manual_seed(0)
    cnn = MeiCnn("cnn14", MelSettings(), (64, 128, 256, 512, 1024, 2048)).eval()
    proj = _proj(2048)
    naive_cnn = MeiCnn("cnn14", MelSettings(), (64, 128, 256, 512, 1024, 2048)).eval()
    naive_cnn.load_state_dict(cnn.state_dict())
    ours = CnnJointAudio(
        cnn, proj, device="cpu", precision=precision, frames=False, provenance={"settings": {}}
    )

    @torch.inference_mode()
    def naive(wave: np.ndarray) -> torch.Tensor:
        with _autocast(precision):
            z = clip_vector(naive_cnn(torch.from_numpy(wave)[None]))
        return F.normalize(proj(z.float()), dim=-1)

    return lambda waves: ours.features(waves)[0], naive, 32000


def htsat(precision: str) -> tuple[Callable, Callable, int]:
    from transformers import ClapAudioConfig
    from transformers.models.clap.modeling_clap import ClapAudioEncoder

    from diffatr.extract.joint.htsat import HtsatJointAudio, _FrontEnd

    torch.manual_seed(0)
    config = ClapAudioConfig(enable_fusion=False)  # HTSAT: spec 256, embed 96, 2-2-6-2, window 8
    encoder, front, proj = ClapAudioEncoder(config).eval(), _FrontEnd(MelSettings()), _proj(768)
    ours = HtsatJointAudio(
        encoder, front, proj, MelSettings(), Runtime(precision=precision), {"settings": {}}
    )

    @torch.inference_mode()
    def naive(wave: np.ndarray) -> torch.Tensor:
        with _autocast(precision):
            latent = encoder(front(torch.from_numpy(wave)[None])).pooler_output
        return F.normalize(proj(latent.float()), dim=-1)

    return ours.features, naive, 32000


def clap(precision: str) -> tuple[Callable, Callable, int]:
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from diffatr.extract.joint.clap import ClapJointAudio

    torch.manual_seed(0)
    model = ClapModel(ClapConfig()).eval()  # laion/clap-htsat-unfused sizes, random weights
    fe = ClapFeatureExtractor(truncation="rand_trunc")
    ours = ClapJointAudio(model, fe, device="cpu", precision=precision, provenance={"settings": {}})

    @torch.inference_mode()
    def naive(wave: np.ndarray) -> torch.Tensor:
        inputs = fe(wave, sampling_rate=48000, return_tensors="pt")
        with _autocast(precision):
            return model.get_audio_features(**inputs).pooler_output

    return ours.features, naive, 48000


BUILDERS = {"wavcaps-cnn14": cnn14, "wavcaps-htsat": htsat, "clap": clap}


def waves_for(n: int, seconds: float, rate: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    freqs = rng.uniform(100, 4000, size=(n, 1))
    return (0.3 * np.sin(2 * np.pi * freqs * t) + 0.05 * rng.normal(size=(n, len(t)))).astype(
        np.float32
    )


def time_it(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up (oneDNN primitive creation, allocator)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--kinds", default=",".join(KINDS))
    args = ap.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}; "
        f"{args.clips} clips x {args.seconds:g} s, batch {args.batch_size}"
    )
    header = ("kind", "precision", "naive clips/s", "ours clips/s", "speed-up")
    print("{:<15} {:<9} {:>14} {:>13} {:>9}".format(*header))
    for kind in args.kinds.split(","):
        for precision in ("fp32", "bf16"):
            ours, naive, rate = BUILDERS[kind](precision)
            waves = waves_for(args.clips, args.seconds, rate)

            def run_naive(naive=naive, waves=waves) -> None:
                for wave in waves:
                    naive(wave)

            def run_ours(ours=ours, waves=waves) -> None:
                for b in range(0, len(waves), args.batch_size):
                    ours(waves[b : b + args.batch_size])

            t_naive = time_it(run_naive, args.repeats)
            t_ours = time_it(run_ours, args.repeats)
            n = len(waves)
            print(
                f"{kind:<15} {precision:<9} {n / t_naive:>14.2f} {n / t_ours:>13.2f} "
                f"{t_naive / t_ours:>8.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
