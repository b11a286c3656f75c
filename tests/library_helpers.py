"""A small sound library on disk (distinct synthetic sounds in several formats, in sub-folders),
and a tiny WavCaps-layout joint model to index it with, shared by the search and serve tests
(built once per session: conftest's `library` fixture)."""

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from click.testing import CliRunner
from joint_helpers import EMBED, text_folder, tiny_bert, wavcaps_checkpoint

from diffatr.cli import main

# name -> (rate, seconds, kind, parameter): sounds a tiny random CNN tells apart
SOUNDS = {
    "dog.wav": (32000, 1.0, "sine", 440.0),
    "rain.flac": (44100, 1.5, "noise", 0.3),
    "birds/lark.wav": (16000, 0.5, "chirp", 3000.0),
    "birds/owl.ogg": (32000, 2.0, "sine", 150.0),
    "engine/car.flac": (22050, 1.2, "square", 60.0),
    "engine/truck.wav": (32000, 0.8, "clicks", 8.0),
}
CAPTIONS = {
    "dog.wav": ["a dog barks twice", "barking"],
    "rain.flac": ["heavy rain on a roof"],
}


def sound(kind: str, rate: int, seconds: float, p: float, seed: int) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    if kind == "sine":
        x = 0.4 * np.sin(2 * np.pi * p * t)
    elif kind == "noise":
        x = p * rng.standard_normal(len(t))
    elif kind == "chirp":
        x = 0.3 * np.sin(2 * np.pi * p * t * t)
    elif kind == "square":
        x = 0.2 * np.sign(np.sin(2 * np.pi * p * t))
    else:  # clicks: p per second
        x = np.zeros(len(t))
        x[:: int(rate / p)] = 0.9
    return (x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def make_library(root: Path) -> Path:
    lib = root / "library"
    for i, (name, (rate, seconds, kind, p)) in enumerate(SOUNDS.items()):
        path = lib / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, sound(kind, rate, seconds, p, i), rate)
    return lib


def make_model(root: Path, lib: Path) -> tuple[Path, Path]:
    """(WavCaps-layout checkpoint, text config folder). A tiny random CNN maps every sound to
    nearly one vector (cosines of 0.9999), so the audio projection's first layer is set to
    centre and whiten the library's clip vectors: distinct sounds land far apart, as in a
    trained model, and "a clip finds itself first" can fail."""
    from diffatr.extract import load_audio
    from diffatr.extract.joint.cnn import clip_vector

    model = root / "wavcaps_tiny.pt"
    parts = wavcaps_checkpoint(model)
    cnn = parts["cnn"]
    with torch.no_grad():
        waves = [load_audio(lib / n) for n in SOUNDS]
        waves = [np.pad(w, (0, max(0, 32000 - len(w)))) for w in waves]  # 1 s, as extraction
        z = torch.cat([clip_vector(cnn(torch.from_numpy(w)[None])) for w in waves])
        mean, std = z.mean(0), z.std(0) + 1e-6
        w = torch.randn(EMBED, z.shape[1], generator=torch.Generator().manual_seed(4)) / std
        blob = torch.load(model, weights_only=True)
        blob["model"]["audio_proj.0.weight"] = w
        blob["model"]["audio_proj.0.bias"] = -(w @ mean)
    torch.save(blob, model)
    return model, text_folder(root, tiny_bert())


def index_library(lib: Path, out: Path, model: Path, text: Path, *extra: str) -> Path:
    args = ["extract", "--audio-dir", str(lib), "--out", str(out), "--audio-only",
            "--joint-model", str(model), "--text-encoder", str(text), "--workers", "0",
            "--device", "cpu", *extra]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


def captioned_cache(lib: Path, out: Path, model: Path, text: Path) -> Path:
    """A joint cache of the library's captioned clips (a Clotho-layout caption file)."""
    csv = lib.parent / "captions.csv"
    rows = ["file_name,caption_1,caption_2"]
    rows += [f"{name},{caps[0]},{caps[-1] if len(caps) > 1 else ''}" for name, caps in
             CAPTIONS.items()]  # fmt: skip
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = ["extract", str(csv), "--audio-dir", str(lib), "--out", str(out),
            "--joint-model", str(model), "--text-encoder", str(text), "--workers", "0",
            "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


def build_library(root: Path) -> dict:
    """{"root", "folder", "model", "text", "cache"}: the library indexed with the tiny model
    (conftest's session-wide `library` fixture)."""
    folder = make_library(root)
    model, text = make_model(root, folder)
    cache = index_library(folder, root / "lib.h5", model, text)
    return {"root": root, "folder": folder, "model": model, "text": text, "cache": cache}
