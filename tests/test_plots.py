"""The two pictures (diffatr/evaluate/plots.py): each call writes one valid PNG, atomically;
bad input or a failing write leaves nothing behind (and an older file untouched)."""

import struct

import numpy as np
import pytest
from matplotlib.figure import Figure

from diffatr.evaluate.plots import history_figure, plot_diffusion_process, plot_recall_curves

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


def test_history_figure_draws_the_log() -> None:
    history = [
        {"epoch": e, "loss": 3.0 - e, "seconds": 1.0, "t2a_R@1": 10.0 * e, "a2t_R@10": 5.0 + e}
        for e in (1, 2, 3)
    ]
    fig = history_figure(history, "head.pt")
    loss_ax, val_ax = fig.axes
    (loss,) = loss_ax.get_lines()
    assert list(loss.get_xdata()) == [1, 2, 3] and list(loss.get_ydata()) == [2.0, 1.0, 0.0]
    lines = {line.get_label(): list(line.get_ydata()) for line in val_ax.get_lines()}
    assert lines == {"t2a R@1": [10.0, 20.0, 30.0], "a2t R@10": [6.0, 7.0, 8.0]}
    with pytest.raises(ValueError, match="empty training log"):
        history_figure([])


def test_write_history_draws_the_png_beside_the_logs(tmp_path) -> None:
    from diffatr.history import write_history

    write_history(tmp_path / "h.pt", [{"epoch": 1, "loss": 0.5, "t2a_R@1": 1.0}])
    assert (tmp_path / "h.pt.log.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "h.pt.log.csv").is_file() and (tmp_path / "h.pt.log.json").is_file()
