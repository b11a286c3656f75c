"""Read a cache (format v1): lazy row access for data larger than memory, and a fast path that
loads a split into torch tensors.

Reads: one cache file. Writes: nothing. The HDF5 handle is opened lazily and re-opened in a
forked process (DataLoader workers), since h5py handles do not survive a fork.
"""

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from .schema import FORMAT, FORMAT_VERSION, SIDES, CacheError

_EXTRACT_HINT = {
    "audio": "it holds only captions; extract the audio side into it",
    "text": "it holds only audio; extract the text side into it",
}


@dataclass(frozen=True)
class CacheTensors:
    """One split in memory: what evaluation and training read."""

    audio: torch.Tensor  # (Na, Da)
    text: torch.Tensor  # (Nt, Dt)
    audio_index: torch.Tensor  # (Nt,) int64, -1 for captions with no known clip
    audio_ids: list[str]
    captions: list[str]


def open_h5(path: Path) -> h5py.File:
    """Open an HDF5 file read-only, turning every way that can fail into a one-line CacheError."""
    if not path.exists():
        raise CacheError(f"{path}: no such file")
    if path.is_dir():
        raise CacheError(f"{path}: is a folder, not a cache file")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as e:
        raise CacheError(f"{path}: cannot read the file ({e})") from None
    if not is_hdf5:
        raise CacheError(f"{path}: not an HDF5 file (a diffatr cache is HDF5; was it renamed?)")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise CacheError(
            f"{path}: damaged or truncated HDF5 file ({str(e).splitlines()[0]}); re-create it"
        ) from None


class Rows:
    """Lazy rows of one 2-D dataset: `len`, `shape`, `dtype`, slicing, chunked iteration."""

    def __init__(self, cache: "Cache", key: str):
        self._cache, self.key = cache, key
        ds = cache.h5[key]
        self.shape: tuple[int, ...] = ds.shape
        self.dtype = ds.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        try:
            return self._cache.h5[self.key][index]
        except OSError as e:
            raise CacheError(f"{self._cache.path}: cannot read /{self.key} ({e})") from None

    def chunks(self, rows: int = 8192) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first_row, block) over the whole dataset, `rows` at a time."""
        for start in range(0, len(self), rows):
            yield start, self[start : start + rows]


class Cache:
    """A cache file opened for reading. Use as a context manager or call `close()`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._h5: h5py.File | None = None
        self._pid = -1
        attrs = self.attrs
        problem = None
        if attrs.get("format") != FORMAT:
            problem = f"an HDF5 file, but not a diffatr cache (format={attrs.get('format')!r})"
        elif attrs.get("format_version") != FORMAT_VERSION:
            problem = (
                f"cache format version {attrs.get('format_version')}, this diffatr reads "
                f"version {FORMAT_VERSION}; use the diffatr release that wrote it"
            )
        if problem:
            self.close()
            raise CacheError(f"{self.path}: {problem}")

    @property
    def h5(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = open_h5(self.path)
            self._pid = os.getpid()
        return self._h5

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- description -----------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        return {k: plain(v) for k, v in self.h5.attrs.items()}

    def side_attrs(self, side: str) -> dict:
        """A side's provenance attributes, with `settings` parsed from JSON."""
        out = {k: plain(v) for k, v in self.require(side).attrs.items()}
        if isinstance(out.get("settings"), str):
            with contextlib.suppress(json.JSONDecodeError):
                out["settings"] = json.loads(out["settings"])
        return out

    def has(self, side: str) -> bool:
        return side in self.h5

    def require(self, side: str) -> h5py.Group:
        if side not in self.h5:
            raise CacheError(f"{self.path}: has no /{side} group ({_EXTRACT_HINT[side]})")
        return self.h5[side]

    def has_sequences(self, side: str) -> bool:
        return self.has(side) and SIDES[side]["seq"] in self.h5[side]

    # -- rows ------------------------------------------------------------------------------
    @property
    def n_audio(self) -> int:
        return len(self.require("audio")["ids"])

    @property
    def n_text(self) -> int:
        return len(self.require("text")["captions"])

    def audio_ids(self) -> list[str]:
        return self._strings("audio/ids")

    def captions(self) -> list[str]:
        return self._strings("text/captions")

    def audio_index(self) -> np.ndarray:
        self.require("text")
        return self._read("text/audio_index").astype(np.int64, copy=False)

    def embeddings(self, side: str) -> Rows:
        self.require(side)
        return Rows(self, f"{side}/embeddings")

    def sequence(self, side: str, row: int) -> np.ndarray:
        """The ragged features of one row: frames of clip `row` or tokens of caption `row`."""
        seq, off = SIDES[side]["seq"], SIDES[side]["offsets"]
        if not self.has_sequences(side):
            raise CacheError(f"{self.path}: has no /{side}/{seq} (sequence features)")
        n = len(self.h5[side][SIDES[side]["names"]])
        if not 0 <= row < n:
            raise CacheError(f"{self.path}: {side} row {row} is out of range (0..{n - 1})")
        lo, hi = self.h5[side][off][row : row + 2]
        return self._read(f"{side}/{seq}", slice(int(lo), int(hi)))

    def sequences(self, side: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """The ragged features of rows start:stop in one contiguous read: (values, offsets).

        values (sum of lengths, D); offsets (stop - start + 1,) int64 from 0, so row start + i
        owns values[offsets[i]:offsets[i + 1]]. start == stop gives a (0, D) array (the width)."""
        seq, off = SIDES[side]["seq"], SIDES[side]["offsets"]
        if not self.has_sequences(side):
            raise CacheError(f"{self.path}: has no /{side}/{seq} (sequence features)")
        n = len(self.h5[side][SIDES[side]["names"]])
        if not 0 <= start <= stop <= n:
            raise CacheError(f"{self.path}: {side} rows {start}:{stop} are out of range (0..{n})")
        offsets = self._read(f"{side}/{off}", slice(start, stop + 1)).astype(np.int64)
        values = self._read(f"{side}/{seq}", slice(int(offsets[0]), int(offsets[-1])))
        return values, offsets - offsets[0]

    def load_tensors(self, dtype: torch.dtype = torch.float32, device="cpu") -> CacheTensors:
        """The fast path: both sides of the split as tensors (needs both sides)."""
        self.require("audio")
        self.require("text")
        return CacheTensors(
            audio=self._tensor("audio/embeddings", dtype).to(device),
            text=self._tensor("text/embeddings", dtype).to(device),
            audio_index=torch.from_numpy(self.audio_index()).to(device),
            audio_ids=self.audio_ids(),
            captions=self.captions(),
        )

    def _tensor(self, key: str, dtype: torch.dtype) -> torch.Tensor:
        ds = self.h5[key]
        if ds.dtype == np.float32 and dtype == torch.float32:
            out = np.empty(ds.shape, np.float32)
            if out.size:
                self._guard(key, lambda: ds.read_direct(out))
            return torch.from_numpy(out)
        out = torch.empty(ds.shape, dtype=dtype)
        for start, block in Rows(self, key).chunks():
            out[start : start + len(block)] = torch.from_numpy(block)
        return out

    def _strings(self, key: str) -> list[str]:
        side = key.split("/")[0]
        self.require(side)
        try:
            return list(self._guard(key, lambda: self.h5[key].asstr()[:]))
        except UnicodeDecodeError as e:
            raise CacheError(
                f"{self.path}: /{key} holds a string that is not UTF-8 ({e})"
            ) from None

    def _read(self, key: str, index=slice(None)) -> np.ndarray:
        return self._guard(key, lambda: self.h5[key][index])

    def _guard(self, key: str, read):
        try:
            return read()
        except OSError as e:
            raise CacheError(
                f"{self.path}: cannot read /{key} ({e}); the file may be damaged"
            ) from None


def load_tensors(path: str | os.PathLike, dtype=torch.float32, device="cpu") -> CacheTensors:
    """Open a cache, load both sides as tensors, close it."""
    with Cache(path) as cache:
        return cache.load_tensors(dtype, device)


def plain(value):
    """HDF5 attribute values as plain Python (numpy scalars and bytes become int/float/str)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


__all__ = ["Cache", "CacheTensors", "Rows", "load_tensors", "open_h5", "plain"]
