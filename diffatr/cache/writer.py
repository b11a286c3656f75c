"""Write a cache (format v1, see `schema.py`) by appending chunks; the file appears only when complete.

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
from .schema import EMBEDDING_DTYPES, FORMAT, FORMAT_VERSION, NO_CLIP, SIDES, SPACES, CacheError

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
        if "text" in h5 and "audio" in h5:
            index = h5["text/audio_index"]
            n_audio = len(h5["audio/ids"])
            for start in range(0, len(index), 1 << 20):
                rows = index[start : start + (1 << 20)]
                bad = np.flatnonzero((rows < NO_CLIP) | (rows >= n_audio))
                if bad.size:
                    row = start + int(bad[0])
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
        for row, clip_id in enumerate(ids, start):
            first = self._ids.setdefault(clip_id, row)
            if first != row:
                raise CacheError(
                    f"{self.tmp}: clip id {clip_id!r} appears twice (rows {first} and {row}); "
                    "clip ids must be unique"
                )
        self._append_side("audio", ids, embeddings, frames)

    def add_text(
        self, captions: Sequence[str], audio_index, embeddings, tokens: Sequence | None = None
    ) -> None:
        """Append captions (n,), their clip rows audio_index (n,), embeddings (n, Dt), tokens."""
        captions = [str(c) for c in captions]
        index = _numpy(audio_index).astype(np.int64, copy=False).reshape(-1)
        if len(index) != len(captions):
            raise CacheError(f"{len(captions)} captions but {len(index)} audio_index entries")
        self._append_side("text", captions, embeddings, tokens)
        self._append(self._group("text"), "audio_index", index, np.int64)

    def _group(self, side: str) -> h5py.Group:
        if side not in SIDES:
            raise CacheError(f"side must be 'audio' or 'text', not {side!r}")
        return self._file().require_group(side)

    def _append_side(self, side: str, names: list[str], embeddings, seq: Sequence | None) -> None:
        names_key, emb_key = SIDES[side]["names"], SIDES[side]["embeddings"]
        group = self._group(side)
        emb = self._checked(_numpy(embeddings), f"{side} embeddings", group, emb_key)
        if emb.ndim != 2 or len(emb) != len(names):
            raise CacheError(
                f"{side} embeddings must have shape ({len(names)}, D) for {len(names)} rows, "
                f"got {emb.shape}"
            )
        has_seq = SIDES[side]["seq"] in group
        if len(group.get(names_key, ())) and has_seq != (seq is not None):
            raise CacheError(
                f"{side}: every chunk must {'include' if has_seq else 'omit'} sequence features, "
                "as the first chunk did"
            )
        self._append(group, names_key, np.array(names, dtype=object), _STR)
        self._append(group, emb_key, emb, self.dtype)
        if seq is not None:
            self._append_seq(side, group, [_numpy(s) for s in seq], len(names))

    def _append_seq(self, side: str, group: h5py.Group, seq: list[np.ndarray], n: int) -> None:
        seq_key, off_key = SIDES[side]["seq"], SIDES[side]["offsets"]
        if len(seq) != n:
            raise CacheError(f"{side}: {n} rows but {len(seq)} sequence arrays")
        if any(s.ndim != 2 for s in seq):
            raise CacheError(f"{side} {seq_key} must be 2-D arrays (length, D) per row")
        if off_key not in group:
            self._append(group, off_key, np.zeros(1, np.int64), np.int64)
        offsets = group[off_key]
        end = int(offsets[-1])
        lengths = np.array([len(s) for s in seq], dtype=np.int64)
        self._append(group, off_key, end + np.cumsum(lengths), np.int64)
        if lengths.sum():
            rows = self._checked(np.concatenate(seq), f"{side} {seq_key}", group, seq_key)
            self._append(group, seq_key, rows, self.dtype)
        elif seq_key not in group:
            self._append(group, seq_key, np.zeros((0, seq[0].shape[1])), self.dtype)

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
    def _append(group: h5py.Group, key: str, rows: np.ndarray, dtype) -> None:
        if key not in group:
            width = rows.shape[1:]
            itemsize = np.dtype(dtype).itemsize if dtype is not _STR else 64
            chunk_rows = max(1, _CHUNK_BYTES // (itemsize * int(np.prod(width, dtype=np.int64))))
            group.create_dataset(
                key, shape=(0, *width), maxshape=(None, *width), dtype=dtype,
                chunks=(min(chunk_rows, 1 << 16), *width),
            )
        ds = group[key]
        if ds.shape[1:] != rows.shape[1:]:
            raise CacheError(
                f"/{group.name.strip('/')}/{key}: rows of shape {rows.shape[1:]} do not match "
                f"the earlier rows' {ds.shape[1:]}"
            )
        n = len(ds)
        ds.resize(n + len(rows), axis=0)
        ds[n:] = rows if dtype is _STR else rows.astype(dtype, copy=False)
