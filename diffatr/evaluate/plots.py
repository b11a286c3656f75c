"""The two pictures of an evaluation, as PNG files: recall@k curves per system, and the
diffusion process of one query (the DiffATR paper's Figure 3).

Reads arrays (curves.py's output; the probabilities a caller computed from
`diffatr.diffusion_head.trajectory`). Writes one PNG per call, atomically (a failed plot leaves
no file). Figures are drawn on matplotlib's Agg canvas directly, not through pyplot: no global
state, no display, safe in any process.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..atomic import atomic_path

DIRECTIONS = {"t2a": "text → audio", "a2t": "audio → text"}
DPI = 120  # pixels per inch of the PNG: ~1,300 px wide for the recall figure


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)  # the .partial name carries no extension
    return Path(path)


def plot_recall_curves(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    ks: Sequence[int],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """One panel per direction, one line per system: R@k (%) against k.

    curves maps a system name ("cosine", "dual-softmax", "diffatr", ...) to its
    {"t2a": (len(ks),), "a2t": (len(ks),)} curve; a direction no system has is left out.
    """
    ks = np.asarray(list(ks))
    if ks.ndim != 1 or len(np.unique(ks)) < 2:
        raise ValueError("a recall curve needs at least two values of k")
    directions = [d for d in DIRECTIONS if any(d in c for c in curves.values())]
    if not curves or not directions:
        raise ValueError("no curve to plot: give {system: {'t2a': R@k, 'a2t': R@k}}")
    for name, curve in curves.items():
        for d, values in curve.items():
            if d not in DIRECTIONS or np.shape(values) != ks.shape:
                raise ValueError(
                    f"{name} {d}: expected a curve of {len(ks)} values for 't2a' or 'a2t', "
                    f"got shape {np.shape(values)}"
                )
    fig = Figure(figsize=(5.5 * len(directions), 4.2))
    axes = fig.subplots(1, len(directions), squeeze=False)[0]
    for ax, d in zip(axes, directions, strict=True):
        for name, curve in curves.items():
            if d in curve:
                ax.plot(ks, curve[d], label=name, linewidth=1.5)
        low = min(float(np.min(c[d])) for c in curves.values() if d in c)
        ax.set(title=DIRECTIONS[d], xlabel="k", ylabel="R@k (%)")
        ax.set_ylim(max(0.0, 10.0 * np.floor(low / 10.0)), 100.5)
        if ks.max() > 10 * ks.min():  # the small k, where the systems differ, get the room
            ax.set_xscale("log")
            ticks = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
            ax.set_xticks([t for t in ticks if ks.min() <= t <= ks.max()])
            ax.xaxis.set_major_formatter("{x:g}")
        ax.set_xlim(ks.min(), ks.max())
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_diffusion_process(
    probs: np.ndarray,
    step_labels: Sequence[str],
    true_index: int | None,
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Small multiples: one bar chart per DDIM step shown, the distribution over one query's
    top-k candidates (probs (n_steps_shown, k), e.g. softmax of x0_hat), the true clip's bar
    in red (true_index: its position among the k; None when it is not in the top-k)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or 0 in probs.shape:
        raise ValueError(f"probs must be (steps shown, k), got shape {probs.shape}")
    n, k = probs.shape
    if len(step_labels) != n:
        raise ValueError(f"{n} steps of probabilities but {len(step_labels)} step labels")
    if true_index is not None and not 0 <= true_index < k:
        raise ValueError(f"true_index {true_index} is not a candidate position in 0..{k - 1}")
    rows = -(-n // 5)  # at most 5 panels a row, the rows evenly filled
    cols = -(-n // rows)
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    colors = np.full(k, "0.6", dtype=object)
    if true_index is not None:
        colors[true_index] = "tab:red"
    peak = max(float(probs.max()), 1e-12)
    top = 1.12 * peak  # room for the marker above the tallest bar
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        ax.bar(np.arange(1, k + 1), probs[i], color=list(colors), width=0.85)
        if true_index is not None:  # marked above its bar too, visible when the bar is ~0
            ax.plot(true_index + 1, 1.06 * peak, "v", color="tab:red", markersize=5)
        ax.set(title=step_labels[i], ylim=(0, top), xlim=(0.4, k + 0.6))
        ax.set_xlabel("candidate (cosine rank)", fontsize=8)
        ax.tick_params(labelsize=7)
    legend = "red: the true clip" if true_index is not None else "the true clip is not in the top-k"
    fig.suptitle(f"{title}\n{legend}" if title else legend, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def history_figure(history: Sequence[Mapping[str, float]], title: str = "") -> Figure:
    """A training log (one dict per epoch: "epoch", "loss", validation metrics such as
    "t2a_R@1") as two panels: the training loss, and each validation R@k (%) per epoch."""
    if not history:
        raise ValueError("an empty training log has nothing to plot")
    epochs = [row["epoch"] for row in history]
    recalls = [k for k in history[0] if k.split("_")[0] in DIRECTIONS and "_R@" in k]
    fig = Figure(figsize=(11, 4.0))
    loss_ax, val_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [row["loss"] for row in history], "o-", label="training loss")
    loss_ax.set(title="training loss (mean over the epoch)", xlabel="epoch", ylabel="loss")
    for key in recalls:
        val_ax.plot(epochs, [row[key] for row in history], "o-", label=key.replace("_", " "))
    val_ax.set(title="validation", xlabel="epoch", ylabel="R@k (%)")
    for ax in (loss_ax, val_ax):
        ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
        ax.grid(alpha=0.3)
    if recalls:
        val_ax.legend(fontsize=8, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(history: Sequence[Mapping[str, float]], path: str | os.PathLike) -> Path:
    """`history_figure` of a training log, written to `path` (PNG, atomically)."""
    title = f"{Path(path).name.removesuffix('.log.png')}: training log"
    return _save(history_figure(history, title), path)
