"""Audio decoding for extraction: formats, mono downmix, soxr resampling, bad clips, workers."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from diffatr.extract.audio_io import (
    SAMPLE_RATE,
    BadClip,
    ClipDataset,
    load_audio,
    probe_length,
    resampled_length,
)

DEBIAN_SOUNDS = Path("/usr/share/sounds")


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A sine (plus a little noise) (L, channels); channel c is scaled by 1 / (c + 1)."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(0).normal(size=t.shape)
    return np.stack([x / (c + 1) for c in range(channels)], axis=1).astype(np.float32)


def write(path: Path, data: np.ndarray, rate: int, **kwargs) -> Path:
    sf.write(path, data, rate, **kwargs)
    return path


def mp3_writable() -> bool:
    return "MP3" in sf.available_formats() and "MPEG_LAYER_III" in sf.available_subtypes("MP3")


@pytest.mark.parametrize(
    ("name", "kwargs", "lossless"),
    [
        ("a.wav", {"subtype": "PCM_16"}, True),
        ("a.flac", {}, True),
        ("a.ogg", {"format": "OGG", "subtype": "VORBIS"}, False),
        ("a.mp3", {"format": "MP3", "subtype": "MPEG_LAYER_III"}, False),
    ],
)
def test_formats_decode_to_mono_32k(tmp_path, name, kwargs, lossless):
    if name.endswith(".mp3") and not mp3_writable():
        pytest.skip("this libsndfile cannot write mp3")
    data = tone(1.5, 44100, channels=2)
    path = write(tmp_path / name, data, 44100, **kwargs)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1 and wave.flags.c_contiguous
    expected = soxr.resample(data.mean(axis=1), 44100, SAMPLE_RATE, quality="HQ")
    if lossless:
        np.testing.assert_allclose(wave, expected, atol=2e-4)  # 16-bit quantisation
    else:
        # Lossy codecs add encoder delay and padding: compare the spectral content instead.
        assert abs(len(wave) - len(expected)) < 0.1 * SAMPLE_RATE
        spectrum = np.abs(np.fft.rfft(wave[: SAMPLE_RATE // 2]))
        peak_hz = np.argmax(spectrum) * SAMPLE_RATE / (SAMPLE_RATE // 2)
        assert abs(peak_hz - 440) < 5
        assert 0.5 < np.sqrt(np.mean(wave**2)) / np.sqrt(np.mean(expected**2)) < 1.5


def test_stereo_is_averaged_to_mono(tmp_path):
    data = np.random.default_rng(1).uniform(-0.5, 0.5, size=(8000, 2)).astype(np.float32)
    path = write(tmp_path / "st.wav", data, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), (data[:, 0] + data[:, 1]) / 2)


def test_resampling_is_soxr_hq_and_length_predicted(tmp_path):
    data = tone(2.3, 44100)[:, 0]
    path = write(tmp_path / "r.wav", data, 44100, subtype="FLOAT")
    wave = load_audio(path)
    np.testing.assert_array_equal(wave, soxr.resample(data, 44100, SAMPLE_RATE, quality="HQ"))
    assert len(wave) == resampled_length(len(data), 44100) == probe_length(path)
    same_rate = write(tmp_path / "s.wav", data, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(same_rate), data)  # no resampling at 32 kHz


@pytest.mark.parametrize("n", [1, 2, 3, 441, 44101, 123457])
@pytest.mark.parametrize("rate", [44100, 48000, 22050, 64000])
def test_resampled_length_matches_soxr(n, rate):
    out = soxr.resample(np.zeros(n, np.float32), rate, SAMPLE_RATE, quality="HQ")
    assert resampled_length(n, rate) == len(out)


def test_fallback_decoder_when_libsndfile_refuses(tmp_path, monkeypatch):
    from diffatr.extract import audio_io

    data = tone(0.5, 22050, channels=2)
    path = write(tmp_path / "pcm.wav", data, 22050, subtype="PCM_16")
    direct = load_audio(path)

    def refuse(path):
        raise RuntimeError("pretend libsndfile lacks this format")

    monkeypatch.setattr(audio_io, "_decode_soundfile", refuse)
    np.testing.assert_allclose(load_audio(path), direct, atol=1e-6)


def test_bad_clips_raise_badclip_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    no_frames = write(tmp_path / "noframes.wav", np.zeros((0, 1), np.float32), 44100)
    nan = write(tmp_path / "nan.wav", np.full((100, 1), np.nan, np.float32), 44100, subtype="FLOAT")
    cases = {
        tmp_path / "missing.wav": "not found",
        tmp_path: "not a regular file",
        empty: "0 bytes",
        garbage: "cannot decode",
        no_frames: "0 frames",
        nan: "NaN",
    }
    for path, reason in cases.items():
        with pytest.raises(BadClip, match=reason) as info:
            load_audio(path)
        assert str(info.value).startswith(f"{path}: ")
    with pytest.raises(BadClip, match="no audio file"):
        load_audio(None)


def test_badclip_survives_pickling():
    e = pickle.loads(pickle.dumps(BadClip("x.wav", "file not found")))
    assert str(e) == "x.wav: file not found" and e.reason == "file not found"


def as_list(batch: list) -> list:
    return batch


def pad_to_one_second(wave: np.ndarray) -> np.ndarray:
    return np.pad(wave, (0, max(0, SAMPLE_RATE - len(wave))))


def test_clip_dataset_in_workers_returns_errors_instead_of_raising(tmp_path):
    good = write(tmp_path / "good.flac", tone(0.5, 44100), 44100)
    long = write(tmp_path / "long.wav", tone(1.5, SAMPLE_RATE), SAMPLE_RATE)
    garbage = tmp_path / "bad.wav"
    garbage.write_bytes(b"RIFF not really a wave file")
    paths = [good, None, tmp_path / "missing.ogg", garbage, long, good]
    dataset = ClipDataset(paths, prepare=pad_to_one_second)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, num_workers=2, collate_fn=as_list, shuffle=False
    )
    items = {i: (wave, error) for batch in loader for i, wave, error in batch}
    assert sorted(items) == list(range(len(paths)))
    for i in (0, 4, 5):
        wave, error = items[i]
        assert error == "" and wave.dtype == np.float32
    assert len(items[0][0]) == SAMPLE_RATE  # 0.5 s padded by `prepare`
    assert len(items[4][0]) == int(1.5 * SAMPLE_RATE)  # longer clips untouched
    np.testing.assert_array_equal(items[0][0], items[5][0])
    for i, reason in ((1, "no audio file"), (2, "not found"), (3, "cannot decode")):
        wave, error = items[i]
        assert wave is None and reason in error
        if paths[i] is not None:
            assert str(paths[i]) in error


def debian_sounds() -> list[Path]:
    if not DEBIAN_SOUNDS.is_dir():
        return []
    files = [p for ext in ("oga", "ogg", "wav") for p in sorted(DEBIAN_SOUNDS.rglob(f"*.{ext}"))]
    return files[:12]


@pytest.mark.skipif(not debian_sounds(), reason="no Debian sound packages in /usr/share/sounds")
def test_real_debian_sound_files_decode():
    for path in debian_sounds():
        wave = load_audio(path)
        assert wave.ndim == 1 and len(wave) > 0 and wave.dtype == np.float32
        assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.5
        info = sf.info(path)
        assert abs(len(wave) - info.duration * SAMPLE_RATE) <= 2
