"""`diffatr search` on a sound library: query by example (the file embedded exactly as the clip
was: same decoding, resampling, padding, model and dtype; a clip finds itself first), text queries
on a caption-less index through the joint model's text side, captions and column headers in the
output, a FAISS index beside the cache (used, checked, built on request), and refusals."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from library_helpers import SOUNDS, captioned_cache

from diffatr.cache import Cache
from diffatr.cli import main
from diffatr.errors import UserError
from diffatr.experiments.audio_query import AudioQueryEncoder
from diffatr.experiments.search import SearchConfig, Searcher


@pytest.fixture
def lib(library):
    return library


def _run(*args):
    return CliRunner().invoke(main, ["search", *map(str, args)])


def test_an_example_is_embedded_as_its_clip_was(lib):
    with Cache(lib["cache"]) as cache:
        ids, stored = cache.audio_ids(), cache.embeddings("audio")[:]
        encoder = AudioQueryEncoder(cache)
    assert ids == sorted(SOUNDS)
    got = encoder.encode([str(lib["folder"] / i) for i in ids]).numpy()
    np.testing.assert_allclose(got, stored, atol=1e-5)  # one at a time vs batched extraction


def test_every_clip_queried_by_itself_ranks_itself_first(lib):
    out = lib["root"] / "self.json"
    files = [lib["folder"] / name for name in sorted(SOUNDS)]
    args = [a for f in files for a in ("--audio-example", f)]
    result = _run(lib["cache"], *args, "--k", 3, "--json", out)
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text(encoding="utf-8"))
    for name, r in zip(sorted(SOUNDS), found["results"], strict=True):
        assert r["kind"] == "audio" and r["query"] == str(lib["folder"] / name)
        assert r["hits"][0]["clip_id"] == name
        assert r["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert r["hits"][0]["score"] > r["hits"][1]["score"]
        assert r["hits"][0]["path"] == str(lib["folder"] / name)  # the index's own folder
    assert "  rank      score  clip" in result.output


def test_an_example_in_another_format_and_rate(lib, tmp_path):
    """A converted copy (wav 32 kHz of a 44.1 kHz flac) still finds its clip first."""
    import soundfile as sf

    from diffatr.extract import load_audio

    sf.write(tmp_path / "copy.wav", load_audio(lib["folder"] / "rain.flac"), 32000, "FLOAT")
    found = Searcher(str(lib["cache"]), SearchConfig(k=2), text=False, audio=True).search(
        examples=[str(tmp_path / "copy.wav")]
    )
    assert found["results"][0]["hits"][0]["clip_id"] == "rain.flac"


def test_text_queries_on_a_caption_less_index_use_the_joint_text_side(lib):
    from diffatr.extract.joint import load_joint_text_encoder

    searcher = Searcher(str(lib["cache"]), SearchConfig(k=6))
    found = searcher.search(["a dog barks", "rain"])
    text = load_joint_text_encoder(str(lib["model"]), text_encoder=str(lib["text"]))
    q = text.encode(["a dog barks", "rain"]).float()
    with Cache(lib["cache"]) as cache:
        a = torch.from_numpy(cache.embeddings("audio")[:])
        ids = cache.audio_ids()
    cos = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(a, dim=1).T
    for r, row in zip(found["results"], cos, strict=True):
        order = torch.sort(row, descending=True, stable=True).indices.tolist()
        assert [h["clip_id"] for h in r["hits"]] == [ids[j] for j in order]
        np.testing.assert_allclose([h["score"] for h in r["hits"]], row[order], atol=1e-5)
        assert all("captions" not in h for h in r["hits"])


def test_captions_are_shown_with_a_header(lib):
    cache = captioned_cache(lib["folder"], lib["root"] / "cap.h5", lib["model"], lib["text"])
    out = lib["root"] / "cap.json"
    result = _run(cache, "barking", "--audio-example", lib["folder"] / "dog.wav", "--json", out)
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text(encoding="utf-8"))
    dog = found["results"][1]["hits"][0]
    assert dog["clip_id"] == "dog.wav" and dog["captions"] == ["a dog barks twice", "barking"]
    assert "captions" in result.output.splitlines()[3]  # the header of the first query
    assert "a dog barks twice | barking" in result.output


def test_a_changed_model_file_is_refused(lib, tmp_path):
    cache = tmp_path / "lib.h5"
    shutil.copy(lib["cache"], cache)
    with Cache(cache) as c:
        config = json.loads(c.attrs["extract_config"])
    model = config["joint"]["model"]
    saved = Path(model).read_bytes()
    try:
        with open(model, "ab") as f:
            f.write(b"\0")
        result = _run(cache, "--audio-example", lib["folder"] / "dog.wav")
    finally:
        Path(model).write_bytes(saved)
    assert result.exit_code == 1, result.output
    assert "sha256" in result.output and "Traceback" not in result.output


def test_refusals(lib, tmp_path):
    nothing = _run(lib["cache"])
    assert nothing.exit_code == 1 and "Error: no query" in nothing.output
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    result = _run(lib["cache"], "--audio-example", bad)
    assert result.exit_code == 1 and "cannot decode audio" in result.output
    from diffatr.cache import CacheWriter

    synthetic = tmp_path / "s.h5"
    with CacheWriter(synthetic, dataset="d", split="s", space="joint") as w:
        w.set_attrs("audio", encoder="x", feature_kind="x", settings={})
        w.add_audio(["a"], np.ones((1, 8), np.float32))
    with Cache(synthetic) as c, pytest.raises(UserError, match="no extraction settings"):
        AudioQueryEncoder(c)


def test_faiss_index_beside_the_cache(lib, tmp_path):
    pytest.importorskip("faiss")
    cache = tmp_path / "lib.h5"
    shutil.copy(lib["cache"], cache)
    examples = [a for n in ("dog.wav", "birds/owl.ogg") for a in ("--audio-example",
                lib["folder"] / n)]  # fmt: skip
    exact = _run(cache, *examples, "--k", 6, "--json", tmp_path / "exact.json")
    assert exact.exit_code == 0 and "(faiss index)" not in exact.output
    built = _run(cache, *examples, "--k", 6, "--build-index", "--json", tmp_path / "f.json")
    assert built.exit_code == 0, built.output
    assert (tmp_path / "lib.audio.faiss").exists() and "(faiss index)" in built.output
    again = _run(cache, *examples, "--k", 6, "--json", tmp_path / "again.json")
    assert "(faiss index)" in again.output
    want = json.loads((tmp_path / "exact.json").read_text())["results"]
    for name in ("f.json", "again.json"):
        got = json.loads((tmp_path / name).read_text())
        assert got["index"] == "faiss"
        for g, w in zip(got["results"], want, strict=True):  # Flat: exact search
            assert [h["clip_id"] for h in g["hits"]] == [h["clip_id"] for h in w["hits"]]
            np.testing.assert_allclose([h["score"] for h in g["hits"]],
                                       [h["score"] for h in w["hits"]], atol=1e-5)  # fmt: skip
    ignored = _run(cache, *examples, "--exact")
    assert ignored.exit_code == 0 and "(faiss index)" not in ignored.output
    import h5py

    with h5py.File(cache, "a") as f:  # the cache changes under its index
        f["audio/embeddings"][0] = f["audio/embeddings"][1]
    stale = _run(cache, *examples)
    assert stale.exit_code == 1 and "does not match" in stale.output, stale.output
    assert "rows_sha256" in stale.output


def test_a_backbone_index_searched_by_example(lib, tmp_path):
    """CNN14 (random:0 weights) features: the example goes through the PANNs encoder the cache
    records; words are refused (no text side), by name."""
    from diffatr.extract import AudioEncoderConfig, ExtractConfig, extract

    folder = tmp_path / "few"
    folder.mkdir()
    for name in ("dog.wav", "rain.flac", "engine/car.flac"):
        (folder / name).parent.mkdir(exist_ok=True)
        shutil.copy(lib["folder"] / name, folder / name)
    cfg = ExtractConfig(
        audio=AudioEncoderConfig(checkpoint="random:0", device="cpu"), audio_only=True, workers=0
    )
    cache = tmp_path / "panns.h5"
    extract(None, folder, cache, cfg, progress=False)
    searcher = Searcher(str(cache), SearchConfig(k=3), text=False, audio=True)
    with Cache(cache) as c:
        stored = c.embeddings("audio")[:]
    names = ["dog.wav", "engine/car.flac", "rain.flac"]
    got = searcher.audio_encoder.encode([str(folder / n) for n in names]).numpy()
    np.testing.assert_allclose(got, stored, rtol=1e-4, atol=1e-4)
    found = searcher.search(examples=[str(folder / n) for n in names])
    assert [r["hits"][0]["clip_id"] for r in found["results"]] == names
    words = _run(cache, "a dog barks")
    assert words.exit_code == 1 and "no text side" in words.output
