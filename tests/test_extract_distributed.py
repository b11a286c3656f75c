"""Distributed extraction: `torchrun --nproc-per-node 2 -m diffatr.cli extract` on CPU (gloo)
gives the single-process cache, also when it resumes a run interrupted before."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from extract_helpers import (
    HOOK,
    FakeAudioEncoder,
    FakeTextEncoder,
    assert_same_cache,
    make,
    make_dataset,
)

from diffatr.extract import ExtractConfig, extract
from diffatr.extract.distributed import Ranks, contiguous_share

TESTS = Path(__file__).parent
CFG = ExtractConfig(batch_size=2, workers=1, chunk_clips=3)  # 12 clips -> 4 chunks


@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 10])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_contiguous_shares_cover_everything_once(n, world):
    shares = [contiguous_share(list(range(n)), Ranks(r, world)) for r in range(world)]
    assert [x for share in shares for x in share] == list(range(n))  # in order, no duplicate
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_torchrun_two_processes_equal_one_process(tmp_path):
    captions, audio = make_dataset(tmp_path)
    reference = tmp_path / "reference.h5"
    extract(captions, audio, reference, CFG, progress=False, encoders=make)

    out = tmp_path / "out.h5"

    def fail_in_second_chunk(cfg):
        return FakeAudioEncoder(), FakeTextEncoder(fail_at=2)

    with pytest.raises(RuntimeError, match="injected failure"):
        extract(captions, audio, out, CFG, progress=False, encoders=fail_in_second_chunk)

    env = {
        **os.environ,
        "DIFFATR_EXTRACT_ENCODERS": HOOK,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "diffatr.cli", "extract", str(captions), "--audio-dir", str(audio),
        "--out", str(out), "--batch-size", "2", "--workers", "1", "--chunk-clips", "3",
    ]  # fmt: skip
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    # one chunk was done before; rank 0 encoded chunk 1, rank 1 chunks 2 and 3 (3 good clips)
    assert f"wrote {out}: 9 clips, 27 captions" in run.stdout
    assert "rank 1/2: wrote its parts: 3 clips, 9 captions" in run.stdout
    assert "resumed: 1 of 4 chunks were done" in run.stdout
    assert_same_cache(reference, out)
    assert not out.with_name(out.name + ".parts").exists()
