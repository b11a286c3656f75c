"""The FAISS index beside a cache, for `diffatr search` on large libraries: found, checked
against the cache, loaded, or built on first use.

Reads: `<cache dir>/<cache stem>.audio.faiss` and its `.audio.ids.json` sidecar (what
`cache export --format faiss` writes into the cache's own folder), and the cache's clip rows.
Writes: the same two files when asked to build them (`export_faiss.write_faiss`, atomic).

An index matches its cache when its sidecar's row count, width, clip ids and `rows_sha256`
(sha256 of the float32 rows) equal the cache's, and the index holds that many rows of that
width; anything else is refused by name (a stale index would return other clips' rows).
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from .export_faiss import write_faiss
from .optional import require
from .reader import Cache
from .schema import CacheError

SIDE = "audio"


def index_paths(cache_path: str | Path) -> tuple[Path, Path]:
    """(index file, id sidecar) beside the cache."""
    path = Path(cache_path)
    stem = path.parent / path.stem
    return Path(f"{stem}.{SIDE}.faiss"), Path(f"{stem}.{SIDE}.ids.json")


def rows_sha256(cache: Cache) -> str:
    """sha256 of the clip rows as float32 (the sidecar's `rows_sha256`)."""
    digest = hashlib.sha256()
    for _, block in cache.embeddings(SIDE).chunks():
        digest.update(np.ascontiguousarray(block, dtype="<f4").tobytes())
    return digest.hexdigest()


def has_index(cache_path: str | Path) -> bool:
    return all(p.exists() for p in index_paths(cache_path))


def load_index(cache: Cache, sha256: str | None = None):
    """The checked FAISS index of the cache's clips (CacheError if it does not match).
    `sha256`: the rows' checksum when the caller has it already."""
    faiss = require("faiss", "a FAISS index")
    index_file, ids_file = index_paths(cache.path)
    try:
        sidecar = json.loads(ids_file.read_text(encoding="utf-8"))
        index = faiss.read_index(str(index_file))
    except (OSError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CacheError(f"{index_file}: cannot read the index ({first})") from None
    rows = cache.embeddings(SIDE)
    n, dim = rows.shape
    problems = []
    if not isinstance(sidecar, dict) or sidecar.get("modality") != SIDE:
        problems.append("its sidecar is not an audio index's")
    elif "rows_sha256" not in sidecar:
        problems.append("its sidecar records no rows_sha256 (an older export)")
    elif (sidecar.get("rows"), sidecar.get("dim")) != (n, dim):
        problems.append(f"it records {sidecar.get('rows')} x {sidecar.get('dim')}, not {n} x {dim}")
    elif (index.ntotal, index.d) != (n, dim):
        problems.append(f"it holds {index.ntotal} x {index.d}, not {n} x {dim}")
    elif sidecar.get("ids") != cache.audio_ids():
        problems.append("its clip ids differ")
    elif sidecar["rows_sha256"] != (sha256 or rows_sha256(cache)):
        problems.append("its rows_sha256 differs (the cache's clips changed)")
    if problems:
        raise CacheError(
            f"{index_file}: does not match {cache.path}: {problems[0]}; rebuild it "
            "(search --build-index, or cache export --format faiss)"
        )
    return index, sidecar


def build_index(cache: Cache, index_factory: str = "Flat") -> list[Path]:
    """Write the index and its sidecar beside the cache (`export_faiss.write_faiss`)."""
    path = Path(cache.path)
    return write_faiss(cache, [SIDE], path.parent, path.stem, index_factory)
