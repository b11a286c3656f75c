"""DCASE 2025 Task 6 (language-based audio retrieval): text-to-audio mAP@16 where a query may
have several relevant clips, its relevance file, and its predictions file.

Reads: a `Scores`, the caption -> clip index, and optionally the relevance annotations CSV.
Writes: the predictions CSV (atomically). Formats, as the task's baseline system reads and
writes them (CPJKU/dcase2025_task6_baseline: `d25_t6/retrieval_module.py` reads
`metadata_eval.csv`, `d25_t6/predict.py` writes the predictions):

    relevance    CSV with columns `query` (the caption text, exactly as in the caption file)
                 and `audio_filenames` (a Python list literal of the relevant clips' file
                 names, e.g. "['a.wav', 'b.wav']"; a bare file name is one clip). Other
                 columns are ignored. A query is the first caption of the cache with that text
                 (the baseline's `captions.tolist().index(query)`). A query listed on several
                 rows is scored once per row, as the baseline's mean over the file's rows does.
    predictions  CSV with header `index,<clip id 1>,...,<clip id Na>` and one row per distinct
                 caption text, at its first caption: the text, then its score for every clip
                 (the baseline's `predict.py` keys its queries by text in a dict, so a repeated
                 text is one row; `DataFrame.to_csv` writes every float at full precision).
                 Scores are written as the shortest decimal that reads back to the same float32,
                 so the file ranks exactly as the scores did (ties included).

Notation: for a query q with relevant clips R_q and their 1-based ranks r_1 < r_2 < ... < r_m
(m = |R_q|; ties broken by clip order, as in ranks.py),
    AP@16(q) = (1/m) * sum_{i: r_i <= 16} i / r_i        (i = relevant clips ranked so far)
    mAP@16   = mean over queries;  R@k = % of queries with r_1 <= k.
The sum is divided by m, the number of relevant clips, even when m > 16 (then AP@16 < 1 even
for a perfect ranking): the baseline's scorer does exactly this (`average_precision_at_k` in
`on_validation_epoch_end` of `d25_t6/retrieval_module.py`, CPJKU/dcase2025_task6_baseline,
read through its fork Marverlises/dcase2025_task6_baseline: `ap / len(relevant_ranks)`,
"Normalize by total number of relevant items"), not by min(m, 16)
as some AP@k definitions do. (The baseline logs it with k = 10; the task reports k = 16.)
With one relevant clip (m = 1) AP@16 = 1/r if r <= 16 else 0, the usual single-target AP.
Without a relevance file every captioned query's own clip is its one relevant clip.
"""

import ast
import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..atomic import atomic_open
from ..errors import UserError
from ..progress import Progress
from .dcase import jackknife_interval
from .similarity import Scores

CUTOFF = 16
RECALL_AT = (1, 5, 10)
METRICS_2025 = ("R@1", "R@5", "R@10", f"mAP@{CUTOFF}")
REL_COLUMNS = ("query", "audio_filenames")


@dataclass(frozen=True)
class Relevance:
    """Relevant clips per query, flat: query q = rows[q] owns clips[offsets[q]:offsets[q + 1]]."""

    rows: np.ndarray  # (Q,) int64 caption rows, ascending (a row twice: listed twice)
    offsets: np.ndarray  # (Q + 1,) int64
    clips: np.ndarray  # (sum m_q,) int64 clip rows

    @property
    def n_queries(self) -> int:
        return len(self.rows)


def own_clip_relevance(audio_index: torch.Tensor | np.ndarray) -> Relevance:
    """Each caption with a clip is a query whose one relevant clip is its own."""
    index = np.asarray(torch.as_tensor(audio_index).cpu(), dtype=np.int64)
    rows = np.flatnonzero(index >= 0).astype(np.int64)
    return Relevance(rows, np.arange(len(rows) + 1, dtype=np.int64), index[rows])


def _clip_names(cell: str, where: str) -> list[str]:
    text = cell.strip()
    if not text.startswith(("[", "(")):
        return [text] if text else []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise UserError(f"{where}: audio_filenames {text[:60]!r} is not a list literal") from None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: audio_filenames must be a list of file names")
    return list(value)


def read_relevance(
    path: str | os.PathLike, captions: Sequence[str], audio_ids: Sequence[str]
) -> Relevance:
    """The relevance CSV (module docstring) as caption rows and clip rows of one cache."""
    row_of_caption: dict[str, int] = {}
    for j, c in enumerate(captions):
        row_of_caption.setdefault(c, j)
    row_of_clip = {c: i for i, c in enumerate(audio_ids)}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read the relevance file ({e})") from None
    header = [h.strip() for h in lines[0]] if lines else []
    if not set(REL_COLUMNS) <= set(header):
        raise UserError(
            f"{path}: a relevance file needs the columns query,audio_filenames "
            f"(DCASE 2025 Task 6); its header is {','.join(header) or '(empty)'}"
        )
    q_col, a_col = header.index("query"), header.index("audio_filenames")
    entries: list[tuple[int, list[int]]] = []
    for number, fields in enumerate(lines[1:], 2):
        if not any(f.strip() for f in fields):
            continue
        where = f"{path}:{number}"
        if len(fields) != len(header):
            raise UserError(f"{where}: {len(fields)} fields, the header has {len(header)}")
        query = fields[q_col]
        if query not in row_of_caption:
            raise UserError(f"{where}: query {query[:60]!r} is not a caption of the cache")
        row = row_of_caption[query]
        names = _clip_names(fields[a_col], where)
        if not names:
            raise UserError(f"{where}: query {query[:60]!r} has no relevant clip")
        missing = [n for n in names if n not in row_of_clip]
        if missing:
            raise UserError(f"{where}: clip {missing[0]!r} is not a clip of the cache")
        entries.append((row, sorted({row_of_clip[n] for n in names})))
    if not entries:
        raise UserError(f"{path}: lists no query")
    entries.sort(key=lambda e: e[0])  # stable: a query's rows keep the file's order
    rows = np.array([r for r, _ in entries], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(c) for _, c in entries])]).astype(np.int64)
    clips = np.array([c for _, cs in entries for c in cs], dtype=np.int64)
    return Relevance(rows, offsets, clips)


def _ranks_in_rows(rows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-based rank of column target[i] in rows[i]: 1 + #(s > s*) + #(s == s*, earlier)."""
    s = rows.gather(1, target[:, None])  # (R, 1)
    columns = torch.arange(rows.shape[1], device=rows.device)
    earlier = (rows == s) & (columns < target[:, None])  # (R, Na)
    return 1 + torch.count_nonzero(rows > s, dim=1) + torch.count_nonzero(earlier, dim=1)


def relevant_ranks(
    scores: Scores, rel: Relevance, max_elements: int, progress: bool = False
) -> np.ndarray:
    """Rank of every relevant clip in its query's row: (sum m_q,) int64, aligned with clips.

    Queries are taken in spans of caption rows holding at most max_elements scores."""
    na = scores.n_audio
    step = max(1, max_elements // max(na, 1))
    out = np.zeros(len(rel.clips), dtype=np.int64)
    sizes = np.diff(rel.offsets)
    q = 0
    with Progress(
        total=rel.n_queries, desc="dcase2025", unit="query", disable=not progress, leave=False
    ) as bar:
        while q < rel.n_queries:
            lo = int(rel.rows[q])
            q_end = int(np.searchsorted(rel.rows, lo + step))  # queries in rows lo..lo+step-1
            hi = int(rel.rows[q_end - 1]) + 1
            block = scores.t2a(lo, hi)  # (hi - lo, Na)
            if not torch.isfinite(block).all():
                raise UserError("text-to-audio similarities hold NaN or Inf; the scores are broken")
            local = torch.as_tensor(rel.rows[q:q_end] - lo, device=block.device)
            for g in range(int(sizes[q:q_end].max())):
                # the g-th relevant clip of every query that has one
                has = np.flatnonzero(sizes[q:q_end] > g)
                flat = rel.offsets[q:q_end][has] + g
                target = torch.as_tensor(rel.clips[flat], device=block.device)
                out[flat] = _ranks_in_rows(block[local[has]], target).cpu().numpy()
            bar.update(q_end - q)
            q = q_end
    return out


def average_precision(ranks: np.ndarray, offsets: np.ndarray, cutoff: int = CUTOFF) -> np.ndarray:
    """AP@cutoff per query from the ranks of its relevant clips (module docstring)."""
    query = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    order = np.lexsort((ranks, query))  # by query, then rank
    r, query = ranks[order].astype(np.float64), query[order]
    i = np.arange(len(r)) - offsets[query] + 1  # 1-based position among the query's clips
    precision = np.where(r <= cutoff, i / r, 0.0)
    return np.bincount(query, weights=precision, minlength=len(offsets) - 1) / np.diff(offsets)


def dcase2025_protocol(
    scores: Scores,
    audio_index: torch.Tensor,
    relevance: Relevance | None = None,
    max_elements: int = 1 << 22,
    progress: bool = False,
) -> dict[str, float]:
    """t2a R@1/5/10 and mAP@16 (percent) with a jackknife 95% interval for mAP@16."""
    rel = own_clip_relevance(audio_index) if relevance is None else relevance
    if rel.n_queries == 0:
        raise UserError("no caption has a clip and no relevance file was given: nothing to score")
    ranks = relevant_ranks(scores, rel, max_elements, progress)
    ap = average_precision(ranks, rel.offsets)
    best = np.minimum.reduceat(ranks, rel.offsets[:-1])  # r_1 of each query
    out = {f"t2a_R@{k}": 100.0 * float(np.mean(best <= k)) for k in RECALL_AT}
    out[f"t2a_mAP@{CUTOFF}"] = 100.0 * float(np.mean(ap))
    low, high = jackknife_interval(100.0 * ap)
    out[f"t2a_mAP@{CUTOFF}_ci_low"], out[f"t2a_mAP@{CUTOFF}_ci_high"] = low, high
    return out


def write_predictions(
    path: str | os.PathLike,
    scores: Scores,
    captions: Sequence[str],
    audio_ids: Sequence[str],
    max_elements: int = 1 << 22,
) -> None:
    """The 2025 predictions CSV: `index,<clip ids>`, then each distinct caption text (at its
    first caption) and its Na scores at full float32 precision (module docstring)."""
    step = max(1, max_elements // max(scores.n_audio, 1))
    seen: set[str] = set()
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["index", *audio_ids])
        for start in range(0, scores.n_text, step):
            block = scores.t2a(start, min(scores.n_text, start + step)).float().cpu().numpy()
            for caption, row in zip(captions[start : start + len(block)], block, strict=True):
                if caption in seen:
                    continue
                seen.add(caption)
                writer.writerow([caption, *map(full_precision, row)])


def full_precision(value: np.float32) -> str:
    """The shortest decimal that reads back as the same float32 (numpy's str of a float32,
    scientific for tiny values); distinct floats stay distinct and ordered, so the file ranks
    as the scores did."""
    return str(np.float32(value))


def format_dcase2025(rows: dict[str, dict[str, float]]) -> str:
    """One line per system: R@1, R@5, R@10, mAP@16 and its 95% interval."""
    name_w = max(len("system"), *(len(n) for n in rows))
    header = f"{'system':<{name_w}}  dir " + "".join(f"{m:>8}" for m in METRICS_2025)
    header += f"  {'mAP@16 95% CI':>15}"
    lines = ["DCASE 2025 Task 6 protocol (several relevant clips)", header, "-" * len(header)]
    for name, m in rows.items():
        cells = "".join(f"{m[f't2a_{k}']:>8.1f}" for k in METRICS_2025)
        ci = f"[{m[f't2a_mAP@{CUTOFF}_ci_low']:.1f}, {m[f't2a_mAP@{CUTOFF}_ci_high']:.1f}]"
        lines.append(f"{name:<{name_w}}  t2a {cells}  {ci:>15}")
    return "\n".join(lines)
