"""Embedding arrays other tools wrote, read in chunks: `.npy`, `.npz`, Parquet.

Reads: one file (never whole: `.npy` through `np.load(mmap_mode="r")`, `.npz` members streamed
from the zip, Parquet in record batches). Writes: nothing. `open_source(path, side)` gives a
`Source`: the row count, the width, the name columns the file carries, and `chunks()`.

What each file may hold for a side ("audio" or "text"):
    .npy      one 2-D float array (rows = vectors); no names.
    .npz      diffatr's own export (`<side>_embeddings` with audio_ids / captions /
              audio_index), or exactly one 2-D float array.
    .parquet  an embedding column (`embedding`, or the file's only list column) of
              fixed-size lists or lists of floats, all of one length; names from the columns
              diffatr's Parquet export writes: audio `id`; text `caption`, `clip_id`,
              `audio_index`; its `diffatr` schema metadata (attributes) is kept too.
"""

import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .optional import require
from .schema import CacheError

NAME_COLUMNS = {"audio": ("id",), "text": ("caption", "clip_id", "audio_index")}
_NPZ_NAMES = {
    "audio": {"audio_ids": "id"},
    "text": {"captions": "caption", "audio_index": "audio_index"},
}


@dataclass
class Source:
    path: Path
    kind: str  # "npy" | "npz" | "parquet"
    n: int  # rows
    dim: int  # width D
    names: dict[str, list] = field(default_factory=dict)  # id / caption / clip_id / audio_index
    meta: dict = field(default_factory=dict)  # diffatr's export metadata, when present
    _read: Callable[[int], Iterator[np.ndarray]] | None = None  # rows per chunk -> blocks

    def chunks(self, rows: int = 8192) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 block (b, D)) over the whole file; refuses NaN and Inf."""
        start = 0
        for block in self._read(rows):
            block = np.asarray(block, dtype=np.float32).reshape(-1, self.dim)
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                row = start + int(np.flatnonzero(bad)[0])
                raise CacheError(f"{self.path}: row {row} holds NaN or Inf; refusing to import")
            yield start, block
            start += len(block)
        if start != self.n:
            raise CacheError(f"{self.path}: read {start} rows, the file says {self.n}; damaged?")


def open_source(path: str | Path, side: str) -> Source:
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _npy(path)
    if suffix == ".npz":
        return _npz(path, side)
    if suffix in (".parquet", ".pq"):
        return _parquet(path, side)
    raise CacheError(f"{path}: unknown kind of file; give a .npy, .npz or .parquet")


def _check_matrix(path: Path, shape: tuple, dtype: np.dtype, what: str = "the array") -> None:
    if len(shape) != 2:
        raise CacheError(f"{path}: {what} has shape {shape}; embeddings must be 2-D (rows, D)")
    if dtype.kind != "f":
        raise CacheError(f"{path}: {what} holds {dtype}, not floats")


def _npy(path: Path) -> Source:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise CacheError(f"{path}: not a readable .npy file ({e})") from None
    _check_matrix(path, array.shape, array.dtype)

    def read(rows):
        for start in range(0, len(array), rows):
            yield array[start : start + rows]

    return Source(path, "npy", array.shape[0], array.shape[1], _read=read)


def _header(f) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy stream at f, leaving f at the data."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    return read(f)


def _member_header(z: zipfile.ZipFile, member: str) -> tuple[tuple, bool, np.dtype]:
    with z.open(member) as f:
        return _header(f)


def _npz(path: Path, side: str) -> Source:
    try:
        with zipfile.ZipFile(path) as z:
            headers = {
                m[: -len(".npy")]: _member_header(z, m) for m in z.namelist() if m.endswith(".npy")
            }
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise CacheError(f"{path}: not a readable .npz file ({e})") from None
    own = f"{side}_embeddings"
    if own in headers:
        key, names = own, {}
        with np.load(path, allow_pickle=False) as npz:
            for array, column in _NPZ_NAMES[side].items():
                if array in npz.files:
                    names[column] = npz[array].tolist()
    else:
        matrices = [k for k, (shape, _, dtype) in headers.items() if len(shape) == 2]
        if len(matrices) != 1:
            raise CacheError(
                f"{path}: holds {len(matrices)} 2-D arrays ({', '.join(matrices) or 'none'}); "
                f"give an .npz with one, or diffatr's export with {own}"
            )
        key, names = matrices[0], {}
    shape, fortran, dtype = headers[key]
    _check_matrix(path, shape, dtype, f"array {key!r}")
    if fortran:
        raise CacheError(f"{path}: array {key!r} is in Fortran order; save it C-ordered")

    def read(rows):
        with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
            _header(f)
            row_bytes = shape[1] * dtype.itemsize
            for start in range(0, shape[0], rows):
                count = min(rows, shape[0] - start)
                data = f.read(count * row_bytes)
                if len(data) != count * row_bytes:
                    raise CacheError(f"{path}: array {key!r} is truncated at row {start}")
                yield np.frombuffer(data, dtype=dtype).reshape(count, shape[1])

    return Source(path, "npz", shape[0], shape[1], names, _read=read)


def _parquet(path: Path, side: str) -> Source:
    pa = require("pyarrow", "importing Parquet")
    pq = require("pyarrow.parquet", "importing Parquet")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise CacheError(f"{path}: not a readable Parquet file ({e})") from None
    schema = pf.schema_arrow
    lists = [f.name for f in schema if _is_list(pa, f.type)]
    column = "embedding" if "embedding" in schema.names else (lists[0] if len(lists) == 1 else None)
    if column is None:
        raise CacheError(
            f"{path}: no `embedding` column and {len(lists)} list columns; name the vectors "
            "column `embedding`"
        )
    kind = schema.field(column).type
    if not _is_list(pa, kind) or not pa.types.is_floating(kind.value_type):
        raise CacheError(f"{path}: column {column!r} is {kind}, not a list of floats")
    n = pf.metadata.num_rows
    dim = kind.list_size if pa.types.is_fixed_size_list(kind) else _first_length(pf, column)
    names = {}
    present = [c for c in NAME_COLUMNS[side] if c in schema.names]
    if present:
        table = pf.read(columns=present)
        names = {c: table.column(c).to_pylist() for c in present}
    meta = {}
    raw = (schema.metadata or {}).get(b"diffatr")
    if raw:
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError:
            meta = {}

    def read(rows):
        start = 0
        for batch in pf.iter_batches(batch_size=rows, columns=[column]):
            array = batch.column(0)
            if array.null_count:
                row = start + array.is_null().to_pylist().index(True)
                raise CacheError(f"{path}: row {row} of {column!r} is null")
            if not pa.types.is_fixed_size_list(array.type):
                lengths = np.asarray(array.value_lengths().to_numpy(zero_copy_only=False))
                wrong = np.flatnonzero(lengths != dim)
                if wrong.size:
                    row = start + int(wrong[0])
                    raise CacheError(
                        f"{path}: row {row} of {column!r} has {lengths[wrong[0]]} values, "
                        f"the first row {dim}; every vector needs the same length"
                    )
            values = array.flatten()
            if values.null_count:
                raise CacheError(f"{path}: {column!r} holds null values near row {start}")
            yield values.to_numpy(zero_copy_only=False)
            start += len(array)

    return Source(path, "parquet", n, dim, names, meta, _read=read)


def _is_list(pa, kind) -> bool:
    return (
        pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)
    )


def _first_length(pf, column: str) -> int:
    for batch in pf.iter_batches(batch_size=1, columns=[column]):
        if len(batch):
            value = batch.column(0)[0]
            return len(value) if value.is_valid else 0
    return 0
