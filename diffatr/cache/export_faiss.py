"""Export a cache as FAISS indexes (clip-retrieval / autofaiss style serving): one index per
modality over L2-normalised rows, searched by inner product (= cosine).

Reads: a cache. Writes: `<stem>.<side>.faiss` (faiss.write_index) and `<stem>.<side>.ids.json`
(the row -> id sidecar: {"modality", "metric", "index_factory", "rows", "dim", "rows_sha256",
"ids", and for text "clip_ids"}), each atomically. `rows_sha256` (sha256 of the float32 rows as
stored, before normalising) lets `diffatr search` check that an index still matches its
cache. Rows are added in chunks; an index that needs training (IVF, PQ, ...) is trained first on
at most `TRAIN_ROWS` evenly spaced rows.

Default index: "Flat" (exact search). Any `faiss.index_factory` string works with
`--index-factory`, e.g. "IVF256,Flat" or "HNSW32".
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_open, atomic_path
from ..progress import Progress
from .optional import require
from .reader import Cache
from .schema import CacheError

TRAIN_ROWS = 1 << 16  # training sample for IVF / PQ indexes


def unit_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalised float32 rows; an all-zero row stays zero (as evaluation does)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def write_faiss(
    cache: Cache, sides: list[str], out: Path, stem: str, index_factory: str = "Flat"
) -> list[Path]:
    """One index + id sidecar per side; see the module docstring."""
    faiss = require("faiss", "--format faiss")
    ids = cache.audio_ids() if cache.has("audio") else []
    written = []
    for side in sides:
        rows = cache.embeddings(side)
        n, dim = rows.shape
        try:
            index = faiss.index_factory(dim, index_factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise CacheError(
                f"--index-factory {index_factory!r}: faiss cannot build it "
                f"({str(e).strip().splitlines()[-1]})"
            ) from None
        if not index.is_trained:
            step = max(1, n // TRAIN_ROWS)
            sample = unit_rows(rows[0:n:step])
            try:
                index.train(sample)
            except RuntimeError as e:
                raise CacheError(
                    f"--index-factory {index_factory!r}: training on {len(sample)} rows failed "
                    f"({str(e).strip().splitlines()[-1]}); choose a smaller index"
                ) from None
        digest = hashlib.sha256()
        with Progress(total=n, desc=f"{side} -> faiss", unit="row", leave=False) as bar:
            for _, block in rows.chunks():
                digest.update(np.ascontiguousarray(block, dtype="<f4").tobytes())
                index.add(unit_rows(block))
                bar.update(len(block))
        target = out / f"{stem}.{side}.faiss"
        with atomic_path(target) as tmp:
            faiss.write_index(index, str(tmp))
        sidecar = {
            "modality": side,
            "metric": "inner_product on L2-normalised rows (cosine)",
            "index_factory": index_factory,
            "rows": n,
            "dim": dim,
            "rows_sha256": digest.hexdigest(),
        }
        if side == "audio":
            sidecar["ids"] = ids
        else:
            sidecar["ids"] = cache.captions()
            sidecar["clip_ids"] = [
                ids[k] if 0 <= k < len(ids) else None for k in cache.audio_index().tolist()
            ]
        ids_file = out / f"{stem}.{side}.ids.json"
        with atomic_open(ids_file, "w", encoding="utf-8") as f:
            json.dump(sidecar, f, ensure_ascii=False)
        written += [target, ids_file]
    return written
