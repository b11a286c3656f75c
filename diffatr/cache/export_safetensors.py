"""Export a cache as safetensors: the embeddings and the caption->clip index as tensors, the
cache's attributes as the metadata header, clip ids and captions in a JSON sidecar.

Reads: a cache. Writes: `<stem>.safetensors` and `<stem>.names.json`, each atomically.

Tensors: audio_embeddings (Na, Da), text_embeddings (Nt, Dt) in the cache's dtype (F32 | F16),
audio_index (Nt,) I64 (-1 = no clip). Metadata (string -> string, as the format requires):
format="diffatr-cache", root / audio / text = the attributes as JSON, names_file = the sidecar's
name. The sidecar holds {"audio_ids": [...], "captions": [...]} in row order.

The file is streamed in chunks following the published layout (8-byte little-endian header
length, the JSON header padded to 8 bytes, then the tensors' bytes back to back), since the
library's writers take whole arrays; the result is then opened with `safetensors.safe_open`
and compared with what was meant, so a file the library cannot read is never left behind.
"""

import json
import struct
from pathlib import Path

import numpy as np

from ..atomic import atomic_open, atomic_path
from .reader import Cache, Rows
from .schema import CacheError

_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int64"): "I64"}


def write_safetensors(cache: Cache, sides: list[str], out: Path, stem: str) -> list[Path]:
    """`<stem>.safetensors` + `<stem>.names.json`; see the module docstring."""
    from .optional import require

    safetensors = require("safetensors", "--format safetensors")
    tensors: dict[str, Rows | np.ndarray] = {f"{s}_embeddings": cache.embeddings(s) for s in sides}
    if "text" in sides:
        tensors["audio_index"] = cache.audio_index().astype(np.int64)
    names_file = out / f"{stem}.names.json"
    metadata = {
        "format": "diffatr-cache",
        "root": json.dumps(cache.attrs, default=str),
        "names_file": names_file.name,
    }
    for side in sides:
        metadata[side] = json.dumps(cache.side_attrs(side), default=str)
    header, offset = {"__metadata__": metadata}, 0
    for name, t in tensors.items():
        size = int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize
        header[name] = {
            "dtype": _DTYPES[np.dtype(t.dtype)],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    target = out / f"{stem}.safetensors"
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for t in tensors.values():
                if isinstance(t, Rows):
                    for _, block in t.chunks():
                        f.write(np.ascontiguousarray(block).astype("<" + block.dtype.str[1:]).data)
                else:
                    f.write(np.ascontiguousarray(t).astype("<i8").data)
        _check(safetensors, tmp, header)
    names = {}
    if "audio" in sides:
        names["audio_ids"] = cache.audio_ids()
    if "text" in sides:
        names["captions"] = cache.captions()
    with atomic_open(names_file, "w", encoding="utf-8") as f:
        json.dump(names, f, ensure_ascii=False)
    return [target, names_file]


def _check(safetensors, path: Path, header: dict) -> None:
    """Open the written file with the library and compare names, shapes and metadata."""
    with safetensors.safe_open(str(path), framework="numpy") as f:
        seen = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        meta = f.metadata()
    meant = {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
    if seen != meant or meta != header["__metadata__"]:
        raise CacheError(f"{path}: the safetensors library reads {seen}, not {meant}")
