"""The two pictures (diffatr/evaluate/plots.py): each call writes one valid PNG, atomically;
bad input or a failing write leaves nothing behind (and an older file untouched)."""

import struct

import numpy as np
import pytest
from matplotlib.figure import Figure

from diffatr.evaluate.plots import plot_diffusion_process, plot_recall_curves

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


def curves(ks):
    k = np.asarray(ks, dtype=np.float64)
    return {
        "cosine": {"t2a": 100 * (1 - np.exp(-k / 10)), "a2t": 100 * (1 - np.exp(-k / 8))},
        "diffatr": {"t2a": 100 * (1 - np.exp(-k / 9)), "a2t": 100 * (1 - np.exp(-k / 7))},
        "dcase-only": {"t2a": 100 * (1 - np.exp(-k / 12))},
    }


def test_recall_curves_are_a_png(tmp_path) -> None:
    ks = range(1, 101)
    out = plot_recall_curves(curves(ks), ks, tmp_path / "sub" / "recall.png", "synthetic")
    assert out == tmp_path / "sub" / "recall.png"
    width, height = png_size(out)
    assert width > height > 100  # two panels side by side
    assert [p.name for p in out.parent.iterdir()] == ["recall.png"]


def test_diffusion_process_is_a_png(tmp_path) -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(8), size=6)  # (steps shown, k)
    labels = [f"k = {k}" for k in (49, 40, 30, 20, 10, 0)]
    for true_index in (3, None):
        out = plot_diffusion_process(probs, labels, true_index, tmp_path / f"{true_index}.png")
        width, height = png_size(out)
        assert width > 100 and height > 100


def test_bad_input_writes_nothing(tmp_path) -> None:
    ks = range(1, 11)
    bad = {"cosine": {"t2a": np.zeros(9)}}
    with pytest.raises(ValueError, match="expected a curve of 10 values"):
        plot_recall_curves(bad, ks, tmp_path / "a.png")
    with pytest.raises(ValueError, match="at least two values of k"):
        plot_recall_curves({"cosine": {"t2a": np.zeros(1)}}, [5], tmp_path / "a.png")
    with pytest.raises(ValueError, match="no curve to plot"):
        plot_recall_curves({}, ks, tmp_path / "a.png")
    probs = np.full((2, 4), 0.25)
    with pytest.raises(ValueError, match="2 steps of probabilities but 1 step labels"):
        plot_diffusion_process(probs, ["k = 0"], 0, tmp_path / "b.png")
    with pytest.raises(ValueError, match="true_index 4"):
        plot_diffusion_process(probs, ["a", "b"], 4, tmp_path / "b.png")
    with pytest.raises(ValueError, match="probs must be"):
        plot_diffusion_process(np.ones(4), ["a"], 0, tmp_path / "b.png")
    assert list(tmp_path.iterdir()) == []


def test_a_failing_write_leaves_the_old_file(tmp_path, monkeypatch) -> None:
    out = tmp_path / "recall.png"
    out.write_bytes(b"old")

    def broken(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(PNG)  # half a file, then the disk fills
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="No space left"):
        plot_recall_curves(curves(range(1, 5)), range(1, 5), out)
    with pytest.raises(OSError, match="No space left"):
        plot_diffusion_process(np.full((1, 3), 1 / 3), ["k = 0"], 1, tmp_path / "new.png")
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recall.png"]
