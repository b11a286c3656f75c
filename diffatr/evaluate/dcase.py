"""DCASE Task 6b extras: the jackknife confidence interval and the submission CSV.

Jackknife (leave one query out) for a mean score x_1..x_n: theta_(i) = mean of the others,
var = (n - 1)/n * sum_i (theta_(i) - mean_i theta_(i))^2, interval theta +- z * sqrt(var) with z
the normal quantile. For a mean this equals the standard error of the mean, computed here in
closed form; the tests check it against the explicit leave-one-out loop.
"""

import csv
import os
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from ..atomic import atomic_open

SUBMISSION_COLUMNS = 10


def jackknife_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Jackknife interval for the mean of per-query scores `values` (n,)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean())
    if n < 2:
        return mean, mean
    loo = (x.sum() - x) / (n - 1)  # theta_(i)
    se = float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return mean - z * se, mean + z * se


def write_submission(
    path: str | os.PathLike, captions: Sequence[str], top_ids: Sequence[Sequence[str]]
) -> None:
    """The Task 6b submission: `caption,file_name_1,...,file_name_10`, one row per caption."""
    header = ["caption"] + [f"file_name_{i}" for i in range(1, SUBMISSION_COLUMNS + 1)]
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for caption, ids in zip(captions, top_ids, strict=True):
            writer.writerow([caption, *ids])
