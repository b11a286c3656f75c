"""Export a cache as Parquet, one file per modality, for LanceDB, DuckDB, Hugging Face datasets.

Reads: a cache. Writes: `<stem>.audio.parquet` and `<stem>.text.parquet` in an output folder,
each atomically, one row group per chunk of rows (embeddings are never held whole).

Columns (one row per clip or caption, in cache order):
    audio   id: string, embedding: fixed_size_list<float32>[Da]
    text    caption: string, audio_index: int64 (-1 = no clip), clip_id: string (null when
            audio_index is -1), embedding: fixed_size_list<float32>[Dt]
The schema metadata key `diffatr` holds JSON {"modality", "root": the cache's root attributes,
"attrs": the modality's provenance attributes}, so `diffatr cache import` can restore them.
float16 caches are written as float32 (the fixed column type other tools expect).
"""

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..progress import Progress
from .optional import require
from .reader import Cache

METADATA_KEY = b"diffatr"
_GROUP_BYTES = 16 << 20  # ~16 MB of embeddings per row group


def rows_per_group(dim: int) -> int:
    return max(1, min(1 << 16, _GROUP_BYTES // (4 * max(dim, 1))))


def embedding_array(pa, block: np.ndarray):
    """A (n, D) block as a fixed_size_list<float32>[D] array (no copy beyond the cast)."""
    block = np.ascontiguousarray(block, dtype=np.float32)
    flat = pa.array(block.reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, block.shape[1])


def write_parquet(cache: Cache, sides: list[str], out: Path, stem: str) -> list[Path]:
    """One Parquet file per side; see the module docstring for the columns."""
    pa = require("pyarrow", "--format parquet")
    pq = require("pyarrow.parquet", "--format parquet")
    root = cache.attrs
    ids = cache.audio_ids() if cache.has("audio") else []
    written = []
    for side in sides:
        rows = cache.embeddings(side)
        dim = rows.shape[1]
        names = {"id": ids} if side == "audio" else _text_columns(cache, ids)
        fields = [(k, pa.int64() if k == "audio_index" else pa.string()) for k in names]
        fields.append(("embedding", pa.list_(pa.float32(), dim)))
        meta = {"modality": side, "root": root, "attrs": cache.side_attrs(side)}
        schema = pa.schema(fields, metadata={METADATA_KEY: json.dumps(meta, default=str)})
        target = out / f"{stem}.{side}.parquet"
        with (
            atomic_path(target) as tmp,
            pq.ParquetWriter(tmp, schema) as writer,
            Progress(total=len(rows), desc=f"{side} -> parquet", unit="row", leave=False) as bar,
        ):
            for start, block in rows.chunks(rows_per_group(dim)):
                stop = start + len(block)
                columns = [
                    pa.array(v[start:stop], type=t)
                    for (_, t), v in zip(fields, names.values(), strict=False)
                ]
                columns.append(embedding_array(pa, block))
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
                bar.update(len(block))
            if not len(rows):
                writer.write_table(schema.empty_table())
        written.append(target)
    return written


def _text_columns(cache: Cache, ids: list[str]) -> dict[str, list]:
    index = cache.audio_index()
    clip = [ids[k] if 0 <= k < len(ids) else None for k in index.tolist()]
    return {"caption": cache.captions(), "audio_index": index, "clip_id": clip}
