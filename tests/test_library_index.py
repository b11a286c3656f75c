"""Indexing a sound library: `extract --audio-dir DIR --out LIB.h5 --audio-only` with no caption
file takes every audio file under DIR (recursively, sorted, hidden files and other files left
out), embeds each as a caption file's clip would be, reports bad ones, resumes, and under torchrun
gives the single-process cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from extract_helpers import HOOK, SR, FakeAudioEncoder, PadTo, assert_same_cache, make

from diffatr.cli import main
from diffatr.errors import UserError
from diffatr.extract import ExtractConfig, extract
from diffatr.extract.audio_io import load_audio
from diffatr.extract.folder import folder_table, library_files

TESTS = Path(__file__).parent
CFG = ExtractConfig(batch_size=2, workers=1, chunk_clips=2, audio_only=True)
GOOD = ["a.wav", "b.flac", "deep/er/c.WAV", "deep/d.ogg", "e.wav", "z/f.wav"]


def make_library(root: Path) -> Path:
    lib = root / "lib"
    rng = np.random.default_rng(1)
    for i, name in enumerate(GOOD):
        path = lib / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rate = (SR, 16000, 44100)[i % 3]
        sf.write(path, 0.1 * rng.standard_normal(rate // 4 + 700 * i).astype(np.float32), rate)
    (lib / "broken.wav").write_bytes(b"not a wav file" * 8)
    (lib / ".DS_Store").write_bytes(b"x")
    (lib / "deep" / "._c.wav").write_bytes(b"resource fork")
    (lib / ".trash").mkdir()
    sf.write(lib / ".trash" / "old.wav", np.zeros(800, np.float32), SR)
    (lib / "notes.txt").write_text("not audio")
    return lib


def test_the_listing(tmp_path):
    lib = make_library(tmp_path)
    os.symlink(lib / "deep", lib / "z" / "again")  # a folder seen before: walked once
    os.symlink(lib, lib / "deep" / "loop")  # a loop of links: never walked twice
    ids = [clip_id for clip_id, _ in library_files(lib)]
    assert ids == sorted([*GOOD, "broken.wav"])
    table = folder_table(lib)
    assert table.format == "folder" and all(c.captions == () for c in table.clips)
    assert all(Path(c.audio_path).is_file() for c in table.clips)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no audio files"):
        folder_table(tmp_path / "empty")


def test_index_embeds_every_file_as_extraction_does(tmp_path):
    lib = make_library(tmp_path)
    out = tmp_path / "lib.h5"
    summary = extract(None, lib, out, CFG, progress=False, encoders=make)
    assert (summary.clips, summary.clips_skipped, summary.captions) == (6, 1, 0)
    with h5py.File(out) as f:
        ids = [s.decode() for s in f["audio/ids"][:]]
        emb = f["audio/embeddings"][:]
        assert "text" not in f
        attrs = dict(f.attrs)
    assert ids == sorted(GOOD)
    for clip_id, row in zip(ids, emb, strict=True):  # naive oracle: each file alone
        want = FakeAudioEncoder.embed_one(PadTo()(load_audio(lib / clip_id, SR)))
        np.testing.assert_array_equal(row, want)
    assert [s["clip_id"] for s in json.loads(attrs["skipped_clips"])] == ["broken.wav"]
    assert attrs["caption_format"] == "folder" and attrs["audio_dir"] == str(lib.absolute())
    assert json.loads(attrs["extract_config"])["audio_only"] is True


def test_refusals(tmp_path):
    lib = make_library(tmp_path)
    with pytest.raises(UserError, match="--audio-only"):
        extract(None, lib, tmp_path / "x.h5", ExtractConfig(), progress=False, encoders=make)
    result = CliRunner().invoke(main, ["extract", "--audio-dir", str(lib), "--out", "x.h5"])
    assert result.exit_code == 1 and "Error: no caption file" in result.output, result.output
    assert "Traceback" not in result.output


class FailInSecondChunk(FakeAudioEncoder):
    def embed(self, waves):
        if len(self.batches) == 2:  # chunk 1 (a.wav, b.flac: two lengths) is done
            raise RuntimeError("injected failure")
        return super().embed(waves)


def test_resume_then_torchrun_equals_one_process(tmp_path):
    lib = make_library(tmp_path)
    reference = tmp_path / "reference.h5"
    extract(None, lib, reference, CFG, progress=False, encoders=make)
    out = tmp_path / "out.h5"
    with pytest.raises(RuntimeError, match="injected failure"):
        extract(
            None, lib, out, CFG, progress=False, encoders=lambda cfg: (FailInSecondChunk(), None)
        )
    env = {
        **os.environ,
        "DIFFATR_EXTRACT_ENCODERS": HOOK,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "diffatr.cli", "extract", "--audio-dir", str(lib), "--audio-only",
        "--out", str(out), "--batch-size", "2", "--workers", "1", "--chunk-clips", "2",
    ]  # fmt: skip
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "resumed: 1 of 4 chunks were done" in run.stdout
    assert f"wrote {out}: 6 clips, 0 captions" in run.stdout
    assert_same_cache(reference, out)
