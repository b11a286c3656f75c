"""Audio files -> mono float32 waveforms at 32 kHz, one clip at a time, safe in DataLoader workers.

Reads: audio files (wav, flac, ogg, mp3 and the rest of what libsndfile reads, through
`soundfile`; anything else through audioread when a system decoder such as ffmpeg is installed).
Writes: nothing.

Decoding rule: all channels are averaged to mono (as `librosa.load(..., mono=True)` does), then the
signal is resampled with soxr at "HQ" quality when the file's rate differs from `sr`. A file that
cannot be used (missing, unreadable, 0 samples, NaN/Inf samples) raises `BadClip`; `ClipDataset`
turns that into an error string so one bad clip never stops a DataLoader.
"""

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

SAMPLE_RATE = 32000  # PANNs' input rate (Hz)
RESAMPLE_QUALITY = "HQ"  # soxr quality preset: high quality, ~10x faster than resampy


class BadClip(Exception):
    """One clip cannot be used; the pipeline reports it by name, skips it and goes on."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        # Both fields stay in `args`, so the exception pickles across DataLoader workers.
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _decode_soundfile(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(path, dtype="float32", always_2d=True)  # (L, channels)
    return data.mean(axis=1, dtype=np.float32), int(rate)  # (L,)


def _decode_audioread(path: Path) -> tuple[np.ndarray, int]:
    """Formats libsndfile lacks (m4a, aac, ...), through whatever audioread backend the system
    has (ffmpeg, GStreamer); 16-bit PCM comes back."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its stdlib imports (audioop, sunau)
        import audioread

        with audioread.audio_open(str(path)) as f:
            rate, channels = int(f.samplerate), max(1, int(f.channels))
            pcm = np.frombuffer(b"".join(f), dtype="<i2")
    pcm = pcm[: len(pcm) - len(pcm) % channels].reshape(-1, channels)  # (L, channels)
    return (pcm.astype(np.float32) / 32768.0).mean(axis=1, dtype=np.float32), rate


def load_audio(path: str | os.PathLike | None, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode one file to a mono float32 waveform (L,) at `sr` Hz; raise `BadClip` if unusable."""
    if path is None:
        raise BadClip(path, "no audio file was found for this clip")
    file = Path(path)
    if not file.exists():
        raise BadClip(path, "file not found")
    if not file.is_file():
        raise BadClip(path, "not a regular file")
    if file.stat().st_size == 0:
        raise BadClip(path, "empty file (0 bytes)")
    try:
        wave, rate = _decode_soundfile(file)
    except Exception as sf_error:
        try:
            wave, rate = _decode_audioread(file)
        except Exception:
            raise BadClip(path, f"cannot decode audio ({sf_error})") from None
    if wave.size == 0:
        raise BadClip(path, "no audio samples (0 frames)")
    if not np.isfinite(wave).all():
        raise BadClip(path, "contains NaN or infinite samples")
    if rate != sr:
        wave = soxr.resample(wave, rate, sr, quality=RESAMPLE_QUALITY)
    if wave.size == 0:
        raise BadClip(path, f"too short to resample to {sr} Hz")
    return np.ascontiguousarray(wave, dtype=np.float32)


def resampled_length(num_samples: int, rate: int, sr: int = SAMPLE_RATE) -> int:
    """How many samples `load_audio` returns for `num_samples` decoded at `rate` Hz.

    soxr rounds the output length half up: floor(num_samples * sr / rate + 1/2)."""
    return (2 * num_samples * sr + rate) // (2 * rate)


def probe_length(path: str | os.PathLike | None, sr: int = SAMPLE_RATE) -> int | None:
    """The length `load_audio` will return, from the file header only; None if unknown.

    A hint for grouping clips by length before decoding them (compressed formats may report an
    approximate frame count); the decoded waveform's length is what counts."""
    if path is None:
        return None
    try:
        info = sf.info(path)
    except Exception:
        return None
    return resampled_length(int(info.frames), int(info.samplerate), sr)


class ClipDataset(torch.utils.data.Dataset):
    """Clips by index: item i is `(i, prepare(waveform) or None, error message or "")`.

    Never raises for a bad clip (a `None` path means no file was found for it). Holds only
    paths and a picklable `prepare`, so it is cheap to send to DataLoader workers.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike | None],
        sr: int = SAMPLE_RATE,
        prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        self.paths = list(paths)
        self.sr = sr
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str]:
        try:
            wave = load_audio(self.paths[i], self.sr)
        except BadClip as e:
            return i, None, str(e)
        if self.prepare is not None:
            wave = self.prepare(wave)
        return i, wave, ""
