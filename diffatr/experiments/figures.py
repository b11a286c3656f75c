"""The pictures of an ablation: recall@k curves of every system, and the diffusion process of
one query (the paper's Figure 3).

Reads: the records of a table (their curves), a trained head and the test cache. Writes two PNG
files (`diffatr.evaluate.plots`), atomically. The diffusion figure says how its query was
chosen (`--figure-query`: the first the head moves to rank 1, the first, or a given row).
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from ..diffusion_head import Head, native_ddim
from ..diffusion_head.fused import GalleryDenoiser
from ..diffusion_head.rerank import rows_noise
from ..diffusion_head.trajectory import cosine_topk, diffusion_trajectory
from ..errors import UserError
from ..evaluate import CosineScores, topk_indices
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


FIGURE_QUERIES = ("first-improved", "first")  # or a caption row number


def parse_figure_query(text: str) -> str | int:
    """`first-improved`, `first` or a caption row (>= 0), as --figure-query takes it."""
    if text in FIGURE_QUERIES:
        return text
    if text.isdigit():
        return int(text)
    raise UserError(f"--figure-query {text}: choose first-improved, first or a caption row number")


def choose_query(head: Head, text, audio, audio_index, topk: int, seed: int, how: str | int):
    """(row, its cosine top-k, position of its clip there or None, DDIM steps, x0_hats (n, k),
    how it was chosen in words) for the Figure-3 query picked by `how`:

    first-improved  the first caption (of the first SEARCHED_QUERIES) whose clip is in its
                    cosine top-k but not first there, and that the head puts first (the
                    figure says it was picked for that); failing that, as `first`
    first           the first caption whose clip is in its cosine top-k
    int             that caption row, whatever the head does with it
    """
    if isinstance(how, int):
        if not 0 <= how < len(text):
            raise UserError(f"--figure-query {how}: the test split has captions 0..{len(text) - 1}")
        rows, words = [how], f"caption {how}, as asked (--figure-query)"
    elif how in FIGURE_QUERIES:
        rows = range(min(SEARCHED_QUERIES, len(text)))
        words = "the first caption whose clip is in its cosine top-k"
    else:
        raise ValueError(f"how must be one of {FIGURE_QUERIES} or a row, not {how!r}")
    first = None
    if how == "first-improved":  # only rows the fast path ranks first need the reference run
        rows = _maybe_improved(head, text, audio, audio_index, len(rows), topk, seed)
    for row in rows:
        clip = int(audio_index[row])
        top = cosine_topk(text[row], audio, topk)
        hits = (top == clip).nonzero() if clip >= 0 else []
        if not len(hits) and not isinstance(how, int):
            continue
        true = int(hits[0, 0]) if len(hits) else None
        steps, x0_hats, _ = diffusion_trajectory(head, text[row], audio[top], "t2a", row, seed)
        found = (row, true, steps, x0_hats)
        first = first or found
        if how != "first-improved":
            break
        if true and _ranked_first(x0_hats[-1], top, true):
            words = (
                f"chosen: the first caption (of the first {SEARCHED_QUERIES}) whose clip the "
                "head moves up to rank 1 (picked for that, not a typical query)"
            )
            return (*found, words)
    if first is None:
        return None
    if how == "first-improved":
        words = "none of the first captions was moved to rank 1; " + words
    return (*first, words)


def _maybe_improved(head: Head, text, audio, audio_index, n: int, topk: int, seed: int):
    """Rows < n, in order, worth the reference trajectory for `first-improved`: the first row
    whose clip is in its top-k (`first`'s fallback), then every row whose clip the fused
    sampler (`GalleryDenoiser`: the C loop where a C compiler builds it, else numba or eager
    torch, never torch.compile; the same noise; tests/test_native_ddim.py and
    tests/test_fused_sample.py hold each to the reference) moves from below rank 1 to rank 1.
    The reference confirms each, so the choice stays the reference's; this runs 1 + a few
    trajectories instead of up to 200
    (measured 9 s of the demo's 66 when no row was improved)."""
    if n == 0:
        return []
    q, C = text[:n].float(), audio.float()
    if head.config.normalize:
        q, C = F.normalize(q, dim=1), F.normalize(C, dim=1)
    S = CosineScores(q, C, q.device).t2a(0, n)  # (n, Na)
    k = min(topk, S.shape[1])
    top = topk_indices(S, k)  # (n, k)
    clips = audio_index[:n].to(top.device).long()
    inside = (top == clips[:, None]) & (clips[:, None] >= 0)  # (n, k)
    x_T = rows_noise(seed, "t2a", range(n), (1, k))[:, 0].contiguous().to(q.device)  # (n, k)
    gallery = GalleryDenoiser(head.t2a, C, head.config.K, compiled=native_ddim.usable(q, C))
    with torch.no_grad():
        x0_hat = gallery.sample(q, top, x_T, head.betas)  # (n, k)
    rows, fallback = [], None
    for r in range(n):
        hits = inside[r].nonzero()
        if not len(hits):
            continue
        fallback = r if fallback is None else fallback
        true = int(hits[0, 0])
        if true and _ranked_first(x0_hat[r], top[r], true):
            rows.append(r)
    return sorted({*rows, *([] if fallback is None else [fallback])})


def outcome(p: torch.Tensor, true: int | None) -> str:
    """What the final distribution p (k,) says, measured: the true clip's probability, its rank,
    its margin over the best other candidate, and p against uniform (1/k). A head that learned
    little ends near uniform with the true clip "first" by a hair; the numbers show that where
    a word like "success" would not."""
    k = len(p)
    if true is None:
        return f"final: the true clip is not among the {k} candidates; max p {float(p.max()):.3g}"
    p_true = float(p[true])
    others = torch.cat([p[:true], p[true + 1 :]])
    rank = 1 + int((others > p_true).sum())  # ties with the true clip counted in its favour
    best_other = float(others.max()) if len(others) else 0.0
    return (
        f"final: true clip p = {p_true:.3g}, rank {rank} of {k}, margin {p_true - best_other:+.3g} "
        f"over the best other ({best_other:.3g}); uniform would be {1 / k:.3g} "
        f"(true clip at {p_true * k:.2f}x uniform)"
    )


def _ranked_first(x0_hat: torch.Tensor, top: torch.Tensor, true: int) -> bool:
    """Whether re-ranking by x0_hat (k,) puts candidate `true` first: highest, and among equal
    estimates the lowest gallery index (the ranking's tie rule; clamped estimates tie)."""
    best = x0_hat == x0_hat.max()
    return bool(best[true]) and int(top[true]) == int(top[best].min())


def step_labels(steps: list[int], shown: list[int]) -> list[str]:
    """Panel titles in the order the steps run: "step 1 of 50 (k = 49)" ... "(k = 0, final)"."""
    labels = [f"step {i + 1} of {len(steps)} (k = {steps[i]})" for i in shown]
    if shown and shown[-1] == len(steps) - 1:
        labels[-1] = labels[-1][:-1] + ", final)"
    return labels


def diffusion_figure(
    head: Head,
    text,
    audio,
    audio_index,
    topk: int,
    seed: int,
    path: Path,
    how: str | int = "first-improved",
):
    """Figure 3 for one caption query over its cosine top-k clips, the query chosen by `how`
    (`choose_query`; the figure says how).

    Panels: at evenly spaced DDIM steps, in the order they run, from the first (x_K pure noise)
    to the last, the head's estimate as the distribution it was trained to match,
    softmax(logit_scale * x0_hat) (L_G = CE(logit_scale * x0_hat, positive)).
    """
    chosen = choose_query(head, text, audio, audio_index, topk, seed, how)
    if chosen is None:
        return None
    row, true, steps, x0_hats, words = chosen
    last = len(steps) - 1
    shown = sorted({round(i * last / (SHOWN_STEPS - 1)) for i in range(SHOWN_STEPS)})
    scale = head.config.logit_scale
    probs = torch.stack([torch.softmax(scale * x0_hats[i], dim=0) for i in shown])  # (n, k)
    final = torch.softmax(scale * x0_hats[-1], dim=0)  # (k,) the last panel's distribution
    title = (
        f"the diffusion process of caption {row} over its cosine top-{len(x0_hats[-1])}: "
        f"softmax({scale:g} * x0_hat) at each step\n{words}\n{outcome(final, true)}"
    )
    return plot_diffusion_process(probs.numpy(), step_labels(steps, shown), true, path, title)


def _name(record: dict) -> str:
    row, system = record["row"], record["system"]
    return row if row == system else f"{row} ({system})"
