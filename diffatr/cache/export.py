"""Export a cache's embeddings for other tools: NumPy (.npz / .npy), the TensorFlow
Embedding Projector's TSV pair (vectors + metadata), and through the `export` extra Parquet
(`export_parquet.py`), safetensors (`export_safetensors.py`) and FAISS (`export_faiss.py`).

Reads: a cache. Writes: files in an output folder, each atomically; embeddings are streamed in
chunks, never held whole. The folder's export record (`outputs.EXPORT_RECORD`) notes which cache
each file came from, so a second cache exported into the same folder is refused before it
replaces the first's files (unless `overwrite`).
"""

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ..atomic import atomic_open, atomic_path
from ..outputs import check_export_targets, check_output_dir, record_export
from ..progress import Progress
from .export_faiss import write_faiss
from .export_parquet import write_parquet
from .export_safetensors import write_safetensors
from .reader import Cache, Rows
from .schema import SIDES, CacheError

FORMATS = ("npz", "npy", "tsv", "parquet", "safetensors", "faiss")


def export(
    path: str | os.PathLike,
    fmt: str,
    out_dir: str | os.PathLike,
    index_factory: str = "Flat",
    overwrite: bool = False,
) -> list[Path]:
    """Write the cache's embeddings, names and caption->clip index; return the files written.

    `index_factory` (faiss only): the `faiss.index_factory` string of the index to build.
    `overwrite`: replace files another cache exported into `out_dir` (else refused)."""
    if fmt not in FORMATS:
        raise CacheError(f"export format must be one of {FORMATS}, not {fmt!r}")
    if index_factory != "Flat" and fmt != "faiss":
        raise CacheError("--index-factory only applies with --format faiss")
    out = Path(out_dir)
    check_output_dir(out, "--out")
    with Cache(path) as cache:
        sides = [s for s in SIDES if cache.has(s)]
        if not sides:
            raise CacheError(f"{path}: holds neither /audio nor /text: nothing to export")
        stem = Path(path).stem
        check_export_targets(out, target_names(cache, fmt, sides, stem), path, overwrite)
        out.mkdir(parents=True, exist_ok=True)
        written = _write(cache, fmt, sides, out, stem, index_factory)
    record_export(out, [w.name for w in written], path)
    return written


def target_names(cache: Cache, fmt: str, sides: list[str], stem: str) -> list[str]:
    """The names of the files `export` writes for this cache in `fmt` (before writing any)."""
    if fmt == "npz":
        return [f"{stem}.npz"]
    if fmt == "parquet":
        return [f"{stem}.{s}.parquet" for s in sides]
    if fmt == "safetensors":
        return [f"{stem}.safetensors", f"{stem}.names.json"]
    if fmt == "faiss":
        return [f"{stem}.{s}.{end}" for s in sides for end in ("faiss", "ids.json")]
    if fmt == "npy":
        names = ["audio_ids"] if "audio" in sides else []
        names += ["captions", "audio_index"] if "text" in sides else []
        return [f"{n}.npy" for n in names + [f"{s}_embeddings" for s in sides]] + [
            "attributes.json"
        ]
    dims = {s: cache.embeddings(s).shape[1] for s in sides}
    prefixes = [""] if len(set(dims.values())) == 1 else [f"{s}_" for s in sides]
    return [f"{p}{kind}.tsv" for p in prefixes for kind in ("vectors", "metadata")]


def _write(cache: Cache, fmt: str, sides, out: Path, stem: str, index_factory: str) -> list[Path]:
    """Write one format's files (the names `target_names` gave)."""
    if fmt == "parquet":
        return write_parquet(cache, sides, out, stem)
    if fmt == "safetensors":
        return write_safetensors(cache, sides, out, stem)
    if fmt == "faiss":
        return write_faiss(cache, sides, out, stem, index_factory)
    arrays = _names(cache, sides)
    matrices = {f"{s}_embeddings": cache.embeddings(s) for s in sides}
    if fmt == "npz":
        return [_write_npz(out / f"{stem}.npz", arrays, matrices)]
    if fmt == "npy":
        return _write_npy(out, arrays, matrices, cache.attrs)
    return _write_tsv(out, cache, sides)


def _names(cache: Cache, sides: list[str]) -> dict[str, np.ndarray]:
    arrays = {}
    if "audio" in sides:
        arrays["audio_ids"] = np.array(cache.audio_ids(), dtype=str)
    if "text" in sides:
        arrays["captions"] = np.array(cache.captions(), dtype=str)
        arrays["audio_index"] = cache.audio_index()
    return arrays


def _npy_header(shape: tuple, dtype: np.dtype) -> bytes:
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue()


def _stream(f, rows: Rows) -> None:
    f.write(_npy_header(rows.shape, rows.dtype))
    for _, block in rows.chunks():
        f.write(np.ascontiguousarray(block).tobytes())


def _write_npz(target: Path, arrays: dict, matrices: dict[str, Rows]) -> Path:
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as z:
        for name, array in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)
        for name, rows in matrices.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                _stream(f, rows)
    return target


def _write_npy(out: Path, arrays: dict, matrices: dict[str, Rows], attrs: dict) -> list[Path]:
    written = []
    for name, array in arrays.items():
        with atomic_open(out / f"{name}.npy", "wb") as f:
            np.save(f, array, allow_pickle=False)
        written.append(out / f"{name}.npy")
    for name, rows in matrices.items():
        with atomic_open(out / f"{name}.npy", "wb") as f:
            _stream(f, rows)
        written.append(out / f"{name}.npy")
    with atomic_open(out / "attributes.json", "w", encoding="utf-8") as f:
        json.dump(attrs, f, indent=2, default=str)
    written.append(out / "attributes.json")
    return written


def _clean(text: str) -> str:
    """A TSV cell: tabs and line breaks would split the row, so they become spaces."""
    return " ".join(text.replace("\t", " ").splitlines())


def _write_tsv(out: Path, cache: Cache, sides: list[str]) -> list[Path]:
    """One vectors/metadata pair; both modalities together when their dims agree (this shows the
    modality gap in the projector), otherwise one pair per modality."""
    dims = {s: cache.embeddings(s).shape[1] for s in sides}
    groups = [sides] if len(set(dims.values())) == 1 else [[s] for s in sides]
    ids = cache.audio_ids() if "audio" in sides else []
    written = []
    for group in groups:
        prefix = "" if len(group) == len(sides) else f"{group[0]}_"
        vectors, metadata = out / f"{prefix}vectors.tsv", out / f"{prefix}metadata.tsv"
        with (
            atomic_open(vectors, "w", encoding="utf-8") as fv,
            atomic_open(metadata, "w", encoding="utf-8") as fm,
        ):
            fm.write("modality\tname\tclip_id\n")
            for side in group:
                if side == "audio":
                    labels = [(_clean(i), _clean(i)) for i in ids]
                else:
                    index = cache.audio_index()
                    labels = [
                        (_clean(c), _clean(ids[k]) if ids and k >= 0 else "")
                        for c, k in zip(cache.captions(), index.tolist(), strict=True)
                    ]
                rows = cache.embeddings(side)
                # Formatting text is slow (thousands of 512-d rows per second): show progress.
                with Progress(
                    total=len(rows), desc=f"{side} -> tsv", unit="row", leave=False
                ) as bar:
                    for start, block in rows.chunks():
                        np.savetxt(fv, block.astype(np.float32), delimiter="\t", fmt="%.6g")
                        for name, clip in labels[start : start + len(block)]:
                            fm.write(f"{side}\t{name}\t{clip}\n")
                        bar.update(len(block))
        written += [vectors, metadata]
    return written
