"""Per-epoch training logs beside a checkpoint, shared by the training stages.

Writes `<ckpt>.log.json` (a list of per-epoch dicts), `<ckpt>.log.csv` (one row per epoch,
the dict keys as columns) and `<ckpt>.log.png` (the training loss and the validation R@k per
epoch, what one looks at first), each atomically, so a crash leaves the previous complete log.
The logs keep each epoch's wall-clock seconds; the checkpoint's copy of the history does not
(`timeless`), so the same seed, data and settings write the same checkpoint bytes.
"""

import csv
import json
import os
from pathlib import Path

from .atomic import atomic_open
from .evaluate.plots import plot_history

WALL_CLOCK = ("seconds", "train_seconds")  # the logs' timing fields, never in a checkpoint


def timeless(history: list[dict]) -> list[dict]:
    """The per-epoch rows without their wall-clock fields: what a checkpoint records."""
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in history]


def write_history(checkpoint: str | os.PathLike, history: list[dict]) -> None:
    """Rewrite the log files of `checkpoint` (JSON, CSV, plot) with every epoch so far."""
    out = Path(checkpoint)
    with atomic_open(out.with_name(out.name + ".log.json"), "w") as f:
        json.dump(history, f, indent=2)
    with atomic_open(out.with_name(out.name + ".log.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    plot_history(history, out.with_name(out.name + ".log.png"))
