"""Check a cache file against format v1: schema, shapes, dtypes, index ranges, NaN/Inf,
duplicate ids, damaged files. Reads the whole file in chunks; writes nothing.

Errors make a cache unusable (evaluate refuses it); warnings are things a user should know
(captions without a clip, missing provenance) that do not make the numbers wrong.
"""

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .reader import open_h5, plain
from .schema import (
    EMBEDDING_DTYPES,
    FORMAT,
    FORMAT_VERSION,
    NO_CLIP,
    PROVENANCE_ATTRS,
    ROOT_ATTRS,
    SIDES,
    SPACES,
    CacheError,
    outside_clips,
)

_CHUNK_ROWS = 4096


@dataclass
class Report:
    """What `verify` found; `ok` when there is no error."""

    path: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_if_bad(self) -> None:
        """Raise the first error as a one-line CacheError (for commands that read the cache)."""
        if self.errors:
            more = len(self.errors) - 1
            tail = f" (and {more} more problem{'s' * (more > 1)}; run `diffatr cache verify`)"
            raise CacheError(f"{self.path}: {self.errors[0]}{tail if more else ''}")


def verify(path: str | os.PathLike) -> Report:
    """Check every part of a cache; never raises for a bad file, reports instead."""
    report = Report(Path(path))
    try:
        h5 = open_h5(report.path)
    except CacheError as e:
        report.errors.append(str(e).removeprefix(f"{report.path}: "))
        return report
    with h5:
        try:
            _check(h5, report)
        except OSError as e:
            report.errors.append(f"cannot read the file ({e}); it is damaged or truncated")
    return report


def _check(h5: h5py.File, report: Report) -> None:
    if not _check_root(h5, report):
        return
    sides = [side for side in SIDES if side in h5]
    if not sides:
        report.errors.append("holds neither an /audio nor a /text group")
        return
    n_rows = {side: _check_side(h5, side, report) for side in sides}
    if len(sides) < 2:
        missing = ({"audio", "text"} - set(sides)).pop()
        report.warnings.append(f"holds only /{sides[0]}: /{missing} is not there yet")
        return
    if n_rows["audio"] is not None and n_rows["text"] is not None:
        _check_index(h5, n_rows["audio"], report)
        _check_dims(h5, report)


def _check_root(h5: h5py.File, report: Report) -> bool:
    fmt = plain(h5.attrs.get("format"))
    if fmt != FORMAT:
        report.errors.append(f"not a diffatr cache (root attribute format={fmt!r})")
        return False
    version = plain(h5.attrs.get("format_version"))
    if version != FORMAT_VERSION:
        report.errors.append(f"format_version {version!r}; this diffatr reads {FORMAT_VERSION}")
        return False
    for name in ROOT_ATTRS:
        if name not in h5.attrs:
            report.errors.append(f"root attribute {name!r} is missing")
    space = plain(h5.attrs.get("embedding_space"))
    if space is None:
        report.warnings.append("no embedding_space attribute: audio-text dims are not checked")
    elif space not in SPACES:
        report.errors.append(f"embedding_space is {space!r}, expected one of {SPACES}")
    return True


def _check_side(h5: h5py.File, side: str, report: Report) -> int | None:
    """Check one group; return its row count, or None when its shape is unusable."""
    group, keys = h5[side], SIDES[side]
    names, emb = group.get(keys["names"]), group.get(keys["embeddings"])
    for key, ds in ((keys["names"], names), (keys["embeddings"], emb)):
        if not isinstance(ds, h5py.Dataset):
            report.errors.append(f"/{side}/{key} is missing")
    if not isinstance(names, h5py.Dataset) or not isinstance(emb, h5py.Dataset):
        return None
    where = f"/{side}/{keys['names']}"
    if names.ndim != 1 or h5py.check_string_dtype(names.dtype) is None:
        report.errors.append(
            f"{where} must be a 1-D string dataset, is {names.ndim}-D {names.dtype}"
        )
        return None
    n = len(names)
    ok = _check_matrix(emb, f"/{side}/{keys['embeddings']}", n, report)
    _check_names(names, side, where, report)
    if side == "text":
        index = group.get("audio_index")
        if not isinstance(index, h5py.Dataset):
            report.errors.append("/text/audio_index is missing")
            ok = False
        elif index.ndim != 1 or index.dtype.kind not in "iu" or len(index) != n:
            report.errors.append(
                f"/text/audio_index must be 1-D integers with {n} rows (one per caption), "
                f"is {index.shape} {index.dtype}"
            )
            ok = False
    _check_sequences(group, side, n, report)
    missing = [a for a in PROVENANCE_ATTRS[side] if a not in group.attrs]
    if missing:
        why = (
            " (expected for an imported cache: its source did not record them)"
            if _imported(group)
            else ""
        )
        report.warnings.append(f"/{side} lacks provenance attributes: {', '.join(missing)}{why}")
    return n if ok else None


def _imported(group: h5py.Group) -> bool:
    """Whether `cache import` made this side (it names itself in encoder or settings): such a
    side cannot know what its source never recorded (the audio's sample rate, say)."""
    settings = str(group.attrs.get("settings", ""))
    return str(group.attrs.get("encoder", "")) == "imported" or '"imported_from"' in settings


def _check_matrix(ds, where: str, n: int | None, report: Report) -> bool:
    """A 2-D float16/32 dataset with n rows (None: any), free of NaN/Inf."""
    if not isinstance(ds, h5py.Dataset) or ds.ndim != 2:
        shape = getattr(ds, "shape", None)
        report.errors.append(f"{where} must be a 2-D dataset (rows, dim), is {shape}")
        return False
    if ds.dtype.name not in EMBEDDING_DTYPES:
        report.errors.append(f"{where} has dtype {ds.dtype}; expected float32 or float16")
        return False
    if n is not None and len(ds) != n:
        report.errors.append(f"{where} has {len(ds)} rows but there are {n} names; they must match")
        return False
    bad, zero, first_bad = 0, 0, None
    for start in range(0, len(ds), _CHUNK_ROWS):
        block = ds[start : start + _CHUNK_ROWS].astype(np.float32)
        nonfinite = ~np.isfinite(block).all(axis=1)
        if nonfinite.any() and first_bad is None:
            first_bad = start + int(np.flatnonzero(nonfinite)[0])
        bad += int(nonfinite.sum())
        zero += int((np.abs(block).sum(axis=1) == 0).sum())
    if bad:
        report.errors.append(f"{where}: {bad} row(s) hold NaN or Inf, the first is row {first_bad}")
        return False
    if zero and where.endswith("embeddings"):
        report.warnings.append(f"{where}: {zero} all-zero row(s) (cosine treats them as 0)")
    return True


def _check_names(names: h5py.Dataset, side: str, where: str, report: Report) -> None:
    try:
        values = names.asstr()[:]
    except UnicodeDecodeError as e:
        report.errors.append(f"{where} holds a string that is not UTF-8 ({e})")
        return
    if side == "audio":
        counts = Counter(values)
        dupes = [name for name, c in counts.items() if c > 1]
        if dupes:
            report.errors.append(
                f"{where}: {len(dupes)} clip id(s) appear more than once, e.g. {dupes[0]!r}; "
                "clip ids must be unique"
            )
    else:
        empty = sum(1 for v in values if not v.strip())
        if empty:
            report.warnings.append(f"{where}: {empty} empty caption(s)")


def _check_sequences(group: h5py.Group, side: str, n: int, report: Report) -> None:
    seq_key, off_key = SIDES[side]["seq"], SIDES[side]["offsets"]
    seq, off = group.get(seq_key), group.get(off_key)
    if seq is None and off is None:
        return
    if seq is None or off is None:
        have, lack = (seq_key, off_key) if off is None else (off_key, seq_key)
        report.errors.append(f"/{side}/{have} is present but /{side}/{lack} is missing")
        return
    if off.ndim != 1 or off.dtype.kind not in "iu" or len(off) != n + 1:
        report.errors.append(
            f"/{side}/{off_key} must be {n + 1} integers, is {off.shape} {off.dtype}"
        )
        return
    offsets = off[:]
    if offsets[0] != 0 or (np.diff(offsets) < 0).any():
        report.errors.append(f"/{side}/{off_key} must start at 0 and never decrease")
    elif _check_matrix(seq, f"/{side}/{seq_key}", None, report) and offsets[-1] != len(seq):
        report.errors.append(
            f"/{side}/{off_key} ends at {int(offsets[-1])} "
            f"but /{side}/{seq_key} has {len(seq)} rows"
        )


def _check_index(h5: h5py.File, n_audio: int, report: Report) -> None:
    index = h5["text/audio_index"][:]
    bad = outside_clips(index, n_audio)
    if bad.size:
        row = int(bad[0])
        report.errors.append(
            f"/text/audio_index: {bad.size} caption(s) point outside the {n_audio} clips, "
            f"the first is row {row} (value {int(index[row])})"
        )
        return
    unlabelled = int((index == NO_CLIP).sum())
    if unlabelled:
        report.warnings.append(
            f"{unlabelled} caption(s) have no clip (audio_index -1): ranked, not scored"
        )
    lonely = n_audio - len(np.unique(index[index >= 0]))
    if lonely:
        report.warnings.append(
            f"{lonely} clip(s) have no caption: gallery items for text-to-audio, "
            "not audio-to-text queries"
        )


def _check_dims(h5: h5py.File, report: Report) -> None:
    da, dt = h5["audio/embeddings"].shape[1], h5["text/embeddings"].shape[1]
    if da != dt and plain(h5.attrs.get("embedding_space")) == "joint":
        report.errors.append(
            f"joint-space cache, but audio embeddings are {da}-d and text {dt}-d; they must match"
        )
