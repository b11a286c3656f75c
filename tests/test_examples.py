"""examples/walkthrough.py runs top to bottom (small sizes, eager): caches from arrays, cosine,
a head trained for one epoch, re-ranking, the recall-curve picture."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import diffatr

ROOT = Path(__file__).resolve().parent.parent


def test_walkthrough_runs(tmp_path) -> None:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "walkthrough.py"), "--clips", "60", "--dim",
         "16", "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "diffatr  t2a" in done.stdout and "wrote" in done.stdout
    picture = tmp_path / "recall_curves.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    test = diffatr.open_cache(tmp_path / "test.h5")
    synthetic = diffatr.open_cache(tmp_path / "synthetic_test.h5")
    np.testing.assert_array_equal(test.text, synthetic.text)  # the arrays went in unchanged
    assert test.captions == synthetic.captions and len(test.clip_ids) == 60
    assert diffatr.load_head(tmp_path / "head.pt").kind == "diffusion"


def test_ranks_recall_is_the_share_of_queries_at_or_above_k() -> None:
    ranks = diffatr.Ranks(np.array([1, 3, 0, 2]), np.array([2, 0]), np.array([0, 0, -1, 1]))
    curves = ranks.recall([1, 2, 3])
    np.testing.assert_allclose(curves["t2a"], [100 / 3, 200 / 3, 100])
    np.testing.assert_allclose(curves["a2t"], [0, 100, 100])
