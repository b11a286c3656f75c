"""Small fake encoders that follow the extraction contract, a tiny dataset on disk, and a cache
comparison, shared by the extraction pipeline tests.

The fakes are cheap, deterministic functions of one clip / one caption, so a clip embedded alone
is what it is inside any batch by construction: any difference the pipeline shows is the
pipeline's. `make(cfg)` is also the DIFFATR_EXTRACT_ENCODERS hook for subprocess runs; there it
reads FAKE_DELAY (seconds to sleep per audio batch) and FAKE_FAIL_AT (raise on that text call).
"""

import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import soundfile as sf

SR = 32000
HOOK = "extract_helpers:make"


@dataclass(frozen=True)
class PadTo:
    """Picklable `prepare`: zero-pad clips shorter than `n` samples at the end."""

    n: int = 3200

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        return np.pad(wave, (0, max(0, self.n - len(wave)))).astype(np.float32)


class FakeAudioEncoder:
    sample_rate = SR
    dim = 6
    frame_dim = 3
    hop = 1600

    def __init__(self, frames: bool = False, delay: float = 0.0):
        self.frames, self.delay = frames, delay
        self.prepare = PadTo()
        self.batches: list[tuple[int, int]] = []  # (B, L) of every embed call

    @staticmethod
    def embed_one(wave: np.ndarray) -> np.ndarray:
        w = wave.astype(np.float64)
        return np.array(
            [w.mean(), w.std(), w.max(), w.min(), np.abs(w).mean(), len(w) / 1e5], np.float32
        )

    def frames_one(self, wave: np.ndarray) -> np.ndarray:
        t = len(wave) // self.hop
        f = wave[: t * self.hop].reshape(t, self.hop).astype(np.float64)  # (T', hop)
        return np.stack([f.mean(1), f.max(1), f.min(1)], axis=1).astype(np.float32)

    def embed(self, waves):
        waves = waves.numpy()
        self.batches.append(waves.shape)
        if self.delay:
            time.sleep(self.delay)
        emb = np.stack([self.embed_one(w) for w in waves])
        frames = [self.frames_one(w) for w in waves] if self.frames else None
        return emb, frames

    def provenance(self) -> dict:
        return {
            "encoder": "fake-audio",
            "feature_kind": "stats",
            "settings": {"device": "whatever-the-rank-uses", "frames": self.frames},
            "checkpoint_sha256": "",
            "sample_rate": SR,
        }


class FakeTextEncoder:
    dim = 4

    def __init__(self, tokens: bool = False, fail_at: int = 0):
        self.tokens, self.fail_at, self.calls = tokens, fail_at, 0

    @staticmethod
    def embed_one(caption: str) -> np.ndarray:
        words = caption.split()
        return np.array(
            [len(caption), len(words), zlib.crc32(caption.encode()) % 997, caption.count("a")],
            np.float32,
        )

    @staticmethod
    def tokens_one(caption: str) -> np.ndarray:
        return np.array(
            [[len(w), zlib.crc32(w.encode()) % 101, i, 1] for i, w in enumerate(caption.split())],
            np.float32,
        ).reshape(-1, 4)

    def encode(self, captions, batch_size: int = 64):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError(f"injected failure in text call {self.calls}")
        emb = np.stack([self.embed_one(c) for c in captions])
        return emb, ([self.tokens_one(c) for c in captions] if self.tokens else None)

    def provenance(self) -> dict:
        return {
            "encoder": "fake-text",
            "feature_kind": "stats",
            "settings": {"device": "auto", "tokens": self.tokens},
            "checkpoint_sha256": "",
        }


def make(cfg):
    """Encoder factory with the pipeline's signature (also the subprocess hook)."""
    audio = None if cfg.text_only else FakeAudioEncoder(cfg.audio.frames, _env("FAKE_DELAY"))
    text = None
    if not cfg.audio_only:
        text = FakeTextEncoder(cfg.text.tokens, int(_env("FAKE_FAIL_AT")))
    return audio, text


def _env(name: str) -> float:
    return float(os.environ.get(name, "0") or 0)


# Clips of the tiny dataset: name -> number of samples (None: special file). Repeated lengths
# make real batches; 1000 samples is padded by `prepare`; the last three are bad.
CLIPS = {
    "a.wav": 8000,
    "b.wav": 12000,
    "c.wav": 8000,
    "short.wav": 1000,
    "d.flac": 8000,
    "e.wav": 12000,
    "empty.wav": 0,
    "f.wav": 9000,
    "g.wav": 8000,
    "noise.wav": None,
    "h.wav": 12000,
    "gone.wav": None,
}
BAD = {"empty.wav", "noise.wav", "gone.wav"}


def make_dataset(root: Path, n_captions: int = 3) -> tuple[Path, Path]:
    """A Clotho-layout caption file and its audio folder; returns (captions.csv, audio dir)."""
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in CLIPS.items():
        if name == "noise.wav":
            (audio / name).write_bytes(b"this is not a wav file at all" * 10)
        elif n is not None:
            wave = 0.1 * rng.standard_normal(n).astype(np.float32)
            sf.write(audio / name, wave, SR, subtype="FLOAT" if name.endswith(".wav") else None)
    header = ",".join(["file_name"] + [f"caption_{k + 1}" for k in range(n_captions)])
    rows = [header]
    for i, name in enumerate(CLIPS):
        caps = [f'"a sound, number {i}.{k} of clip {name}"' for k in range(n_captions)]
        rows.append(",".join([name, *caps]))
    captions = root / "clotho" / "captions_test.csv"
    captions.parent.mkdir(exist_ok=True)
    captions.write_text("\n".join(rows) + "\n")
    return captions, audio


def read_h5(path: Path) -> dict:
    """Every dataset and attribute of an HDF5 file, by path (group attributes as 'g@name')."""
    out: dict = {}
    with h5py.File(path) as f:
        for key, value in f.attrs.items():
            out[f"@{key}"] = value

        def visit(name, obj):
            for key, value in obj.attrs.items():
                out[f"{name}@{key}"] = value
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]

        f.visititems(visit)
    return out


def assert_same_cache(a: Path, b: Path, ignore: tuple[str, ...] = ("@created",)) -> None:
    """Two caches hold the same arrays and attributes (the timestamp aside)."""
    x, y = read_h5(a), read_h5(b)
    keys = (x.keys() | y.keys()) - set(ignore)
    assert x.keys() - set(ignore) == y.keys() - set(ignore), sorted(x.keys() ^ y.keys())
    for key in sorted(keys):
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)
