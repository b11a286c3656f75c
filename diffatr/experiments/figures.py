"""The pictures of an ablation: recall@k curves of every system, and the diffusion process of
one query (the paper's Figure 3).

Reads: the records of a table (their curves), a trained head and the test cache. Writes two PNG
files (`diffatr.evaluate.plots`), atomically.
"""

from pathlib import Path

import torch

from ..diffusion_head import Head
from ..diffusion_head.trajectory import cosine_topk, diffusion_trajectory
from ..evaluate.plots import plot_diffusion_process, plot_recall_curves
from .measure import CURVE_KS

SHOWN_STEPS = 6  # panels of the diffusion picture: evenly spaced DDIM steps, first to last
SEARCHED_QUERIES = 200  # captions tried when choosing the query to draw


def recall_figure(records: list[dict], path: Path, title: str) -> Path | None:
    """R@k for k = 1..100 of each row of `records` (one seed, one train/test pair)."""
    curves = {_name(r): r["curves"] for r in records if r.get("curves")}
    if not curves:
        return None  # the dcase protocol keeps no curves
    return plot_recall_curves(curves, CURVE_KS, path, title)


def diffusion_figure(head: Head, text, audio, audio_index, topk: int, seed: int, path: Path):
    """Figure 3 for one caption query over its cosine top-k clips.

    The query drawn is the first caption (of the first SEARCHED_QUERIES) whose clip is in its
    cosine top-k but not first there, and that the head ends up putting first; failing that, the
    first whose clip is in its top-k at all. Panels: at evenly spaced DDIM steps, from the first
    (x_K pure noise) to the last, the head's estimate as the distribution it was trained to
    match, softmax(logit_scale * x0_hat) (L_G = CE(logit_scale * x0_hat, positive)).
    """
    chosen = None
    for row in range(min(SEARCHED_QUERIES, len(text))):
        clip = int(audio_index[row])
        if clip < 0:
            continue
        top = cosine_topk(text[row], audio, topk)
        hits = (top == clip).nonzero()
        if not len(hits):
            continue
        true = int(hits[0, 0])
        steps, x0_hats, _ = diffusion_trajectory(head, text[row], audio[top], "t2a", row, seed)
        found = (row, true, steps, x0_hats)
        chosen = chosen or found
        if true > 0 and int(x0_hats[-1].argmax()) == true:
            chosen = found
            break
    if chosen is None:
        return None
    row, true, steps, x0_hats = chosen
    last = len(steps) - 1
    shown = sorted({round(i * last / (SHOWN_STEPS - 1)) for i in range(SHOWN_STEPS)})
    scale = head.config.logit_scale
    probs = torch.stack([torch.softmax(scale * x0_hats[i], dim=0) for i in shown])  # (n, k)
    labels = [f"step {steps[i] + 1} of {len(steps)}" for i in shown]
    labels[-1] += " (final)"
    title = (
        f"the diffusion process of caption {row} over its cosine top-{len(x0_hats[-1])}: "
        f"softmax({scale:g} * x0_hat) at each step"
    )
    return plot_diffusion_process(probs.numpy(), labels, true, path, title)


def _name(record: dict) -> str:
    row, system = record["row"], record["system"]
    return row if row == system else f"{row} ({system})"
