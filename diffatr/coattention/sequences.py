"""Ragged frame and token features out of a cache: checking them, reading rows, padding.

Reads: `/audio/frames` and `/text/tokens` of an open `Cache`, by contiguous slices only (one
read per run of neighbouring rows). Writes nothing.

    values (sum n_i, D) and offsets (N + 1,)   ragged rows as the cache stores them
    x (N, n, D), mask (N, n)                   padded to the longest row, mask True at real rows
"""

import numpy as np
import torch

from ..cache import Cache
from ..errors import UserError

_OPTION = {"audio": "--frames", "text": "--tokens"}
_WHAT = {"audio": "frame features (/audio/frames)", "text": "token features (/text/tokens)"}
_ITEM = {"audio": ("clip", "frames"), "text": ("caption", "tokens")}
MAX_GAP = 64  # rows skipped inside one read rather than starting another


def sequence_dims(cache: Cache, role: str) -> tuple[int, int]:
    """(Df, Dl) of a cache holding both sequence features, else a UserError saying how to add
    them (`diffatr extract ... --frames --tokens`)."""
    missing = [side for side in ("audio", "text") if not cache.has_sequences(side)]
    if missing:
        what = " and ".join(_WHAT[side] for side in missing)
        options = " ".join(_OPTION[side] for side in missing)
        raise UserError(
            f"{cache.path}: the {role} cache has no {what}, which the co-attention head reads; "
            f"extract the split with `diffatr extract ... {options}` "
            "(`diffatr project` carries them into the joint-space cache)"
        )
    frames, _ = cache.sequences("audio", 0, 0)
    tokens, _ = cache.sequences("text", 0, 0)
    return frames.shape[1], tokens.shape[1]


def runs(rows: np.ndarray, max_gap: int | None = None) -> list[tuple[int, int]]:
    """Sorted unique rows -> [(lo, hi)] slices covering them, a new one past a gap of more
    than max_gap (default MAX_GAP) rows."""
    if not len(rows):
        return []
    gap = MAX_GAP if max_gap is None else max_gap
    parts = np.split(rows, np.flatnonzero(np.diff(rows) > gap + 1) + 1)
    return [(int(part[0]), int(part[-1]) + 1) for part in parts]


def read_rows(cache: Cache, side: str, rows: np.ndarray) -> dict[int, np.ndarray]:
    """{row: (n_row, D) array} for the sorted unique `rows`, in the cache's dtype.

    The arrays are views into the blocks read, so a block lives while any of its rows does."""
    item, plural = _ITEM[side]
    out: dict[int, np.ndarray] = {}
    wanted = set(rows.tolist())
    for lo, hi in runs(rows):
        values, offsets = cache.sequences(side, lo, hi)
        for i in range(hi - lo):
            if lo + i in wanted:
                if offsets[i + 1] == offsets[i]:
                    raise UserError(
                        f"{cache.path}: {item} row {lo + i} has no {plural}; the co-attention "
                        f"head needs at least one (re-extract the split)"
                    )
                out[lo + i] = values[offsets[i] : offsets[i + 1]]
    return out


def pad(arrays: list[np.ndarray], device: torch.device | str = "cpu"):
    """[(n_i, D)] -> x (N, max n_i, D) float32 zero-padded, mask (N, max n_i) bool."""
    n = max(len(a) for a in arrays)
    x = np.zeros((len(arrays), n, arrays[0].shape[1]), np.float32)
    mask = np.zeros((len(arrays), n), bool)
    for i, a in enumerate(arrays):
        x[i, : len(a)] = a
        mask[i, : len(a)] = True
    return torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device)
