"""Interrupted extractions resume, and the finished cache equals an uninterrupted run's: after an
exception, after Ctrl-C, after kill -9 of a real `python -m diffatr.cli extract` process, with a
damaged part; a rerun with other settings is refused unless --restart."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from extract_helpers import (
    BAD,
    CLIPS,
    HOOK,
    FakeAudioEncoder,
    FakeTextEncoder,
    assert_same_cache,
    make,
    make_dataset,
)

from diffatr.errors import UserError
from diffatr.extract import ExtractConfig, extract

TESTS = Path(__file__).parent
CFG = ExtractConfig(batch_size=2, workers=0, chunk_clips=3)  # 12 clips -> 4 chunks


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    captions, audio = make_dataset(root)
    reference = root / "reference.h5"
    extract(captions, audio, reference, CFG, progress=False, encoders=make)
    return captions, audio, reference


def failing_after(chunks: int, log: list):
    """Encoders whose text side fails in chunk `chunks` + 1 (one text call per chunk)."""

    def encoders(cfg):
        audio, text = FakeAudioEncoder(), FakeTextEncoder(fail_at=chunks + 1)
        log.append(audio)
        return audio, text

    return encoders


def interrupt(captions, audio, out, chunks=2):
    with pytest.raises(RuntimeError, match="injected failure"):
        extract(captions, audio, out, CFG, progress=False, encoders=failing_after(chunks, []))
    parts = out.with_name(out.name + ".parts")
    assert not out.exists()
    assert sorted(p.name for p in parts.iterdir()) == [
        "manifest.json",
        *[f"part-{k:06d}.h5" for k in range(chunks)],
    ]
    return parts


def test_exception_then_rerun_equals_an_uninterrupted_run(data, tmp_path):
    captions, audio, reference = data
    out = tmp_path / "out.h5"
    parts = interrupt(captions, audio, out)
    manifest = json.loads((parts / "manifest.json").read_text())
    assert manifest["n_chunks"] == 4 and len(manifest["captions_sha256"]) == 64
    log: list = []
    summary = extract(captions, audio, out, CFG, progress=False, encoders=failing_after(9, log))
    assert (summary.chunks, summary.chunks_resumed) == (4, 2)
    assert (summary.clips, summary.clips_skipped, summary.captions_skipped) == (9, 3, 9)
    # only the last two chunks' clips were encoded again
    last = [n for n in list(CLIPS)[6:] if n not in BAD]
    assert sum(b for b, _ in log[0].batches) == len(last)
    assert_same_cache(reference, out)
    assert not parts.exists()


def test_other_settings_are_refused_unless_restart(data, tmp_path):
    captions, audio, reference = data
    out = tmp_path / "out.h5"
    interrupt(captions, audio, out, chunks=1)
    for changed, what in [
        (replace(CFG, chunk_clips=4), "chunk_clips"),
        (replace(CFG, dtype="float16"), "dtype"),
        (replace(CFG, audio=replace(CFG.audio, precision="bf16")), "audio.precision"),
    ]:
        with pytest.raises(UserError, match=rf"different settings or input \(.*\b{what}\b"):
            extract(captions, audio, out, changed, progress=False, encoders=make)
    edited = tmp_path / captions.name
    edited.write_text(captions.read_text().replace("number 1.1", "number one"))
    with pytest.raises(UserError, match=r"\(captions_sha256\b.* changed\).*--restart"):
        extract(edited, audio, out, CFG, progress=False, encoders=make)
    # speed settings may change on resume: they do not change the numbers
    faster = replace(CFG, batch_size=3, workers=1, text_batch_size=7)
    summary = extract(captions, audio, out, faster, progress=False, encoders=make)
    assert summary.chunks_resumed == 1
    assert_same_cache(reference, out, ignore=("@created", "@extract_config"))
    interrupt(captions, audio, tmp_path / "again.h5", chunks=1)
    other = replace(CFG, chunk_clips=4)
    summary = extract(
        captions, audio, tmp_path / "again.h5", other, progress=False, encoders=make, restart=True
    )
    assert summary.chunks_resumed == 0 and summary.chunks == 3


def test_a_changed_checkpoint_file_is_refused_before_encoding(data, tmp_path):
    captions, audio, _ = data
    out = tmp_path / "out.h5"
    interrupt(captions, audio, out, chunks=1)

    class OtherWeights(FakeAudioEncoder):
        def provenance(self):
            return {**super().provenance(), "checkpoint_sha256": "beef"}

    log = []

    def encoders(cfg):
        log.append(OtherWeights())
        return log[-1], FakeTextEncoder()

    with pytest.raises(UserError, match=r"/audio features were made differently \(checkpoint"):
        extract(captions, audio, out, CFG, progress=False, encoders=encoders)
    assert log[0].batches == []  # refused before any work


def test_damaged_part_and_leftover_partial_are_redone(data, tmp_path):
    captions, audio, reference = data
    out = tmp_path / "out.h5"
    parts = interrupt(captions, audio, out)
    (parts / "part-000001.h5").write_bytes((parts / "part-000001.h5").read_bytes()[:300])
    (parts / "part-000002.h5.partial").write_bytes(b"half a part")
    summary = extract(captions, audio, out, CFG, progress=False, encoders=make)
    assert summary.chunks_resumed == 1
    assert_same_cache(reference, out)


def _start(captions, audio, out, workers: int, delay: float) -> subprocess.Popen:
    env = {
        **os.environ,
        "DIFFATR_EXTRACT_ENCODERS": HOOK,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "FAKE_DELAY": str(delay),
    }
    args = [
        sys.executable, "-m", "diffatr.cli", "extract", str(captions),
        "--audio-dir", str(audio), "--out", str(out),
        "--batch-size", "2", "--workers", str(workers), "--chunk-clips", "3",
    ]  # fmt: skip
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.05)


def test_ctrl_c_keeps_finished_chunks_and_says_how_to_resume(data, tmp_path, capsys):
    captions, audio, reference = data
    out = tmp_path / "out.h5"

    class CtrlC(FakeTextEncoder):
        def encode(self, captions, batch_size=64):
            if self.calls == 2:
                raise KeyboardInterrupt  # what Python raises when Ctrl-C arrives
            return super().encode(captions, batch_size)

    with pytest.raises(KeyboardInterrupt):
        extract(captions, audio, out, CFG, progress=False, encoders=lambda c: (make(c)[0], CtrlC()))
    assert "run the same command again to resume" in capsys.readouterr().err
    parts = out.with_name(out.name + ".parts")
    assert sorted(p.name for p in parts.glob("part-*")) == ["part-000000.h5", "part-000001.h5"]
    assert extract(captions, audio, out, CFG, progress=False, encoders=make).chunks_resumed == 2
    assert_same_cache(reference, out)


def test_kill_9_of_the_command_then_resume(data, tmp_path):
    captions, audio, reference = data
    out = tmp_path / "out.h5"
    parts = out.with_name(out.name + ".parts")
    proc = _start(captions, audio, out, workers=1, delay=0.4)
    _wait_for(parts / "part-000001.h5", proc)  # the rest takes >= 3 batches x 0.4 s
    proc.send_signal(signal.SIGKILL)
    # The pipes close only when no process holds them: the decoding worker must die too.
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    done = sorted(p.name for p in parts.glob("part-*.h5"))
    assert "part-000001.h5" in done and "part-000003.h5" not in done

    summary = extract(captions, audio, out, CFG, progress=False, encoders=make)
    assert summary.chunks_resumed == len(done)
    assert_same_cache(reference, out)


def test_a_run_that_stopped_at_start_up_does_not_block_the_corrected_command(data, tmp_path):
    """Encoders that fail to load (no checkpoint, a text model not cached) leave no part: the
    corrected command, with other settings, runs without --restart."""
    captions, audio, reference = data

    def cannot_load(cfg):
        raise UserError("no such checkpoint")

    out = tmp_path / "out.h5"
    other = replace(CFG, dtype="float16")  # a wrong first try
    with pytest.raises(UserError, match="no such checkpoint"):
        extract(captions, audio, out, other, progress=False, encoders=cannot_load)
    extract(captions, audio, out, CFG, progress=False, encoders=make)
    assert_same_cache(reference, out)
