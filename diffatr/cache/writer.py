"""Write a cache (format v1, see `schema.py`) in appended chunks; the file appears when complete.

Reads: arrays or tensors handed in by the caller, chunk by chunk. Writes: one HDF5 file, first
under `<name>.partial`, renamed to `<name>` when the writer closes without error. Nothing is held
in memory beyond the chunk being written (and the clip ids, to refuse duplicates).
"""

import datetime
import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..atomic import partial_path
from .schema import (
    EMBEDDING_DTYPES,
    FORMAT,
    FORMAT_VERSION,
    SIDES,
    SPACES,
    CacheError,
    outside_clips,
)

_STR = h5py.string_dtype("utf-8")
_CHUNK_BYTES = 1 << 20  # HDF5 chunk size: ~1 MiB reads well sequentially and by row


def _numpy(x) -> np.ndarray:
    """Accept numpy arrays, torch tensors (any device) and nested lists."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class CacheWriter:
    """Append rows to a new cache; use as a context manager.

    >>> with CacheWriter("test.h5", dataset="clotho", split="test", space="joint") as w:
    ...     w.set_attrs("audio", encoder="cnn14", feature_kind="pre_fc1", settings={...})
    ...     w.add_audio(["a.wav", "b.wav"], audio_emb)          # (2, Da)
    ...     w.add_text(["a dog barks", "rain"], [0, 1], text_emb)  # (2, Dt)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        dataset: str,
        split: str,
        space: str,
        dtype: str = "float32",
        overwrite: bool = False,
    ):
        if space not in SPACES:
            raise CacheError(f"embedding space must be one of {SPACES}, not {space!r}")
        if dtype not in EMBEDDING_DTYPES:
            raise CacheError(f"cache dtype must be one of {EMBEDDING_DTYPES}, not {dtype!r}")
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise CacheError(f"{self.path}: already exists; remove it or choose another output")
        self.tmp = partial_path(self.path)
        self.dtype = np.dtype(dtype)
        self._root_attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "diffatr_version": __version__,
            "dataset": dataset,
            "split": split,
            "embedding_space": space,
        }
        self._h5: h5py.File | None = None
        self._ids: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "CacheWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._h5 = h5py.File(self.tmp, "w")
        self._h5.attrs.update(self._root_attrs)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self._finish()
            except BaseException:
                self._abort()
                raise
        else:
            self._abort()

    def _abort(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
        self.tmp.unlink(missing_ok=True)

    def _finish(self) -> None:
        h5 = self._file()
        if "text/audio_index" in h5 and "audio" in h5:
            index = h5["text/audio_index"][:]  # 8 bytes a caption: small even for WavCaps
            n_audio = len(h5["audio/ids"]) if "ids" in h5["audio"] else 0
            bad = outside_clips(index, n_audio)
            if bad.size:
                row = int(bad[0])
                raise CacheError(
                    f"{self.path}: caption row {row} points to clip {int(index[row])}, "
                    f"but the cache has {n_audio} clips"
                )
        h5.close()
        self._h5 = None
        os.replace(self.tmp, self.path)

    def _file(self) -> h5py.File:
        if self._h5 is None:
            raise CacheError("CacheWriter is not open: use it as `with CacheWriter(...) as w:`")
        return self._h5

    # -- attributes ------------------------------------------------------------------------
    def set_attrs(
        self,
        side: str,
        *,
        encoder: str,
        feature_kind: str,
        settings: dict,
        checkpoint_sha256: str = "",
        sample_rate: int | None = None,
        **extra: str | int | float,
    ) -> None:
        """Record how one side's features were made (the provenance of format v1)."""
        group = self._group(side)
        group.attrs.update(
            encoder=encoder,
            feature_kind=feature_kind,
            settings=json.dumps(settings, sort_keys=True, default=str),
            checkpoint_sha256=checkpoint_sha256,
            **extra,
        )
        if sample_rate is not None:
            group.attrs["sample_rate"] = int(sample_rate)

    def set_root_attrs(self, **attrs: str | int | float) -> None:
        """Extra root attributes (e.g. a list of skipped clips as JSON)."""
        self._file().attrs.update(attrs)

    # -- rows ------------------------------------------------------------------------------
    def add_audio(self, ids: Sequence[str], embeddings, frames: Sequence | None = None) -> None:
        """Append clips: ids (n,), embeddings (n, Da), optionally frames [(T_i, Df)] * n."""
        ids = [str(i) for i in ids]
        start = len(self._ids)
        seen: dict[str, int] = {}
        for row, clip_id in enumerate(ids, start):
            first = self._ids.get(clip_id, seen.setdefault(clip_id, row))
            if first != row:
                raise CacheError(
                    f"{self.path}: clip id {clip_id!r} appears twice (rows {first} and {row}); "
                    "clip ids must be unique"
                )
        self._append_side("audio", ids, embeddings, frames)
        self._ids.update(seen)

    def add_text(
        self, captions: Sequence[str], audio_index, embeddings, tokens: Sequence | None = None
    ) -> None:
        """Append captions (n,), their clip rows audio_index (n,), embeddings (n, Dt), tokens."""
        captions = [str(c) for c in captions]
        index = _numpy(audio_index).astype(np.int64, copy=False).reshape(-1)
        if len(index) != len(captions):
            raise CacheError(f"{len(captions)} captions but {len(index)} audio_index entries")
        if not captions:
            return
        self._append_side("text", captions, embeddings, tokens)
        self._append(self._group("text"), "audio_index", index, np.int64)

    def _group(self, side: str) -> h5py.Group:
        if side not in SIDES:
            raise CacheError(f"side must be 'audio' or 'text', not {side!r}")
        return self._file().require_group(side)

    def _append_side(self, side: str, names: list[str], embeddings, seq: Sequence | None) -> None:
        """Check the whole chunk first, then append it: a refused chunk leaves no rows behind."""
        keys = SIDES[side]
        group = self._group(side)
        if not names:
            return
        emb = self._checked(_numpy(embeddings), f"{side} embeddings", group, keys["embeddings"])
        if emb.ndim != 2 or len(emb) != len(names):
            raise CacheError(
                f"{side} embeddings must have shape ({len(names)}, D) for {len(names)} rows, "
                f"got {emb.shape}"
            )
        has_seq = keys["seq"] in group
        if len(group.get(keys["names"], ())) and has_seq != (seq is not None):
            raise CacheError(
                f"{side}: every chunk must {'include' if has_seq else 'omit'} sequence features, "
                "as the first chunk did"
            )
        self._check_width(group, keys["embeddings"], emb)
        if seq is not None:
            seq_rows, lengths = self._sequence_rows(side, group, seq, len(names))
            self._check_width(group, keys["seq"], seq_rows)
        self._append(group, keys["names"], np.array(names, dtype=object), _STR)
        self._append(group, keys["embeddings"], emb, self.dtype)
        if seq is not None:
            if keys["offsets"] not in group:
                self._append(group, keys["offsets"], np.zeros(1, np.int64), np.int64)
            end = int(group[keys["offsets"]][-1])
            self._append(group, keys["offsets"], end + np.cumsum(lengths), np.int64)
            self._append(group, keys["seq"], seq_rows, self.dtype)

    def _sequence_rows(
        self, side: str, group: h5py.Group, seq: Sequence, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ragged features of a chunk as one (sum of lengths, D) array plus the lengths."""
        seq_key = SIDES[side]["seq"]
        arrays = [_numpy(s) for s in seq]
        if len(arrays) != n:
            raise CacheError(f"{side}: {n} rows but {len(arrays)} sequence arrays")
        if any(a.ndim != 2 for a in arrays) or len({a.shape[1] for a in arrays}) > 1:
            raise CacheError(f"{side} {seq_key} must be 2-D arrays (length, D) of one width D")
        rows = np.concatenate(arrays) if arrays else np.zeros((0, 0), np.float32)
        rows = self._checked(rows, f"{side} {seq_key}", group, seq_key)
        return rows, np.array([len(a) for a in arrays], dtype=np.int64)

    def _checked(self, x: np.ndarray, what: str, group: h5py.Group, key: str) -> np.ndarray:
        """Refuse NaN/Inf and values float16 cannot hold, naming the first bad row."""
        first = len(group[key]) if key in group else 0
        bad = ~np.isfinite(x)
        if bad.any():
            row = first + int(np.argwhere(bad)[0][0])
            raise CacheError(f"{what}: row {row} holds NaN or Inf; refusing to write it")
        if self.dtype == np.float16 and np.abs(x).max(initial=0.0) > np.finfo(np.float16).max:
            row = first + int(np.argwhere(np.abs(x) > np.finfo(np.float16).max)[0][0])
            raise CacheError(f"{what}: row {row} exceeds the float16 range; store float32")
        return x

    @staticmethod
    def _check_width(group: h5py.Group, key: str, rows: np.ndarray) -> None:
        if key in group and group[key].shape[1:] != rows.shape[1:]:
            raise CacheError(
                f"/{group.name.strip('/')}/{key}: rows of shape {rows.shape[1:]} do not match "
                f"the earlier rows' {group[key].shape[1:]}"
            )

    @staticmethod
    def _append(group: h5py.Group, key: str, rows: np.ndarray, dtype) -> None:
        if key not in group:
            width = rows.shape[1:]
            itemsize = np.dtype(dtype).itemsize if dtype is not _STR else 64
            row_bytes = max(1, itemsize * int(np.prod(width, dtype=np.int64)))
            chunk_rows = max(1, _CHUNK_BYTES // row_bytes)
            group.create_dataset(
                key,
                shape=(0, *width),
                maxshape=(None, *width),
                dtype=dtype,
                chunks=(min(chunk_rows, 1 << 16), *width),
            )
        CacheWriter._check_width(group, key, rows)
        ds = group[key]
        n = len(ds)
        ds.resize(n + len(rows), axis=0)
        ds[n:] = rows if dtype is _STR else rows.astype(dtype, copy=False)
