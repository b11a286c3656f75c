"""Build a format-v1 cache from embeddings other tools wrote (`diffatr cache import`).

Reads: an audio and a text source (`sources.py`: .npy, .npz, Parquet), in chunks, and
optionally the clips of a caption file (already parsed by the caller, see `ClipNames`).
Writes: one cache through `CacheWriter` (it appears only when complete).

Row rules. With `ClipNames` (a caption file): audio row i is clip i of the file and the text
rows are its captions in order, clip by clip, caption columns in order; the row counts must
match, and ids the sources carry must be the file's, in its order. Without: the ids, captions
and caption->clip links come from the sources' name columns (diffatr's Parquet / npz export).
Provenance: the encoder names and pooling given here, else "imported". A source's own diffatr
metadata is never promoted to the attributes later commands act on (`encoder`, `settings`,
`checkpoint_sha256`: `diffatr search` loads models they name): it is kept verbatim, as JSON,
in the side's `imported_metadata` attribute, marked untrusted, and `imported_from` records the
source file and its sha256. Only the dataset and split names (labels) and the audio sample rate
are taken from it.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpoints import file_sha256
from ..progress import Progress
from .schema import EMBEDDING_DTYPES, NO_CLIP, SPACES, CacheError
from .sources import Source, open_source
from .writer import CacheWriter


@dataclass(frozen=True)
class ImportConfig:
    space: str = "joint"  # "joint" (audio and text comparable by cosine) or "backbone"
    audio_encoder: str = ""  # the model that made the audio rows ("" = the source's or unknown)
    text_encoder: str = ""  # the text model (hub name or folder) `diffatr search` embeds with
    text_encoder_sha256: str = ""  # its weights' digest, as extraction records it ("" = unknown)
    pooling: str = ""  # "cls" | "mean" | "" (= the source's or unknown)
    dataset: str = ""  # "" = the source's, else "imported"
    split: str = ""  # "" = the source's, else "test"
    dtype: str = "float32"  # float32 | float16 storage
    chunk_rows: int = 8192  # rows read and written at once


@dataclass(frozen=True)
class ClipNames:
    """The clips of a caption file, in order: what the rows of the sources follow."""

    source: str  # the caption file, for messages and provenance
    clip_ids: list[str]
    captions: list[tuple[str, ...]]  # per clip, in column order


@dataclass(frozen=True)
class ImportSummary:
    n_audio: int
    n_text: int
    audio_dim: int
    text_dim: int


def import_embeddings(
    out: str | os.PathLike,
    audio: str | os.PathLike,
    text: str | os.PathLike,
    cfg: ImportConfig = ImportConfig(),
    names: ClipNames | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> ImportSummary:
    """Write the cache `out` from the two sources; see the module docstring for the rules."""
    if cfg.space not in SPACES:
        raise CacheError(f"--space {cfg.space}: choose one of {', '.join(SPACES)}")
    if cfg.dtype not in EMBEDDING_DTYPES:
        raise CacheError(f"dtype {cfg.dtype}: choose one of {', '.join(EMBEDDING_DTYPES)}")
    if cfg.pooling not in ("", "cls", "mean"):
        raise CacheError(f"--pooling {cfg.pooling}: choose cls or mean")
    if Path(out).exists() and not overwrite:
        raise CacheError(f"{out}: already exists; remove it or choose another output")
    a, t = open_source(audio, "audio"), open_source(text, "text")
    if cfg.space == "joint" and a.dim != t.dim:
        raise CacheError(
            f"{t.path}: text rows are {t.dim}-d but the audio rows ({a.path}) {a.dim}-d; "
            "a joint space needs one width (use --space backbone for separate encoders)"
        )
    if names is not None:
        ids, captions, index = _from_caption_file(a, t, names)
    else:
        ids = _ids(a)
        captions, index = _captions(t, a, ids)
    root = a.meta.get("root", {}) or t.meta.get("root", {})
    with CacheWriter(
        out,
        dataset=cfg.dataset or root.get("dataset") or "imported",
        split=cfg.split or root.get("split") or "test",
        space=cfg.space,
        dtype=cfg.dtype,
        overwrite=overwrite,
    ) as w:
        w.set_attrs("audio", **_provenance(a, cfg.audio_encoder, "", "", names))
        w.set_attrs(
            "text",
            **_provenance(t, cfg.text_encoder, cfg.text_encoder_sha256, cfg.pooling, names),
        )
        _copy(a, progress, cfg.chunk_rows, lambda s, b: w.add_audio(ids[s : s + len(b)], b))
        _copy(
            t,
            progress,
            cfg.chunk_rows,
            lambda s, b: w.add_text(captions[s : s + len(b)], index[s : s + len(b)], b),
        )
    return ImportSummary(len(ids), len(captions), a.dim, t.dim)


def _copy(src: Source, progress: bool, rows: int, add) -> None:
    with Progress(
        total=src.n, desc=f"import {src.path.name}", unit="row", disable=not progress, leave=False
    ) as bar:
        for start, block in src.chunks(rows):
            add(start, block)
            bar.update(len(block))


def _from_caption_file(a: Source, t: Source, names: ClipNames):
    ids = list(names.clip_ids)
    if a.n != len(ids):
        raise CacheError(f"{a.path}: {a.n} rows, but {names.source} has {len(ids)} clips")
    given = a.names.get("id")
    if given is not None:
        known = set(ids)
        for row, (got, want) in enumerate(zip(given, ids, strict=True)):
            if got not in known:
                raise CacheError(
                    f"{a.path}: row {row} has id {got!r}, not a clip of {names.source}"
                )
            if got != want:
                raise CacheError(
                    f"{a.path}: row {row} has id {got!r}, but clip {row} of {names.source} is "
                    f"{want!r}; rows must follow the caption file's clip order"
                )
    captions = [c for clip in names.captions for c in clip]
    index = np.repeat(np.arange(len(ids)), [len(c) for c in names.captions]).astype(np.int64)
    if t.n != len(captions):
        raise CacheError(f"{t.path}: {t.n} rows, but {names.source} has {len(captions)} captions")
    return ids, captions, index


def _ids(a: Source) -> list[str]:
    ids = a.names.get("id")
    if ids is None:
        raise CacheError(
            f"{a.path}: holds no clip ids ({a.kind} without an `id` column); give the caption "
            "file the rows follow with --captions"
        )
    seen: dict[str, int] = {}
    for row, clip in enumerate(ids):
        if clip is None or not str(clip):
            raise CacheError(f"{a.path}: row {row} has an empty clip id")
        if clip in seen:
            raise CacheError(f"{a.path}: clip id {clip!r} on rows {seen[clip]} and {row}")
        seen[clip] = row
    if len(ids) != a.n:
        raise CacheError(f"{a.path}: {len(ids)} clip ids for {a.n} rows")
    return [str(i) for i in ids]


def _captions(t: Source, a: Source, ids: list[str]) -> tuple[list[str], np.ndarray]:
    captions = t.names.get("caption")
    if captions is None:
        raise CacheError(
            f"{t.path}: holds no captions ({t.kind} without a `caption` column); give the "
            "caption file the rows follow with --captions"
        )
    if len(captions) != t.n or any(c is None for c in captions):
        raise CacheError(f"{t.path}: {len(captions)} captions (some empty?) for {t.n} rows")
    clip_ids, given = t.names.get("clip_id"), t.names.get("audio_index")
    if clip_ids is not None:
        row_of = {c: i for i, c in enumerate(ids)}
        index = np.empty(t.n, np.int64)
        for row, clip in enumerate(clip_ids):
            if clip is not None and clip not in row_of:
                raise CacheError(
                    f"{t.path}: row {row} belongs to clip {clip!r}, which {a.path} does not hold"
                )
            index[row] = NO_CLIP if clip is None else row_of[clip]
    elif given is not None:
        index = np.asarray(given, dtype=np.int64)
        bad = np.flatnonzero((index < NO_CLIP) | (index >= len(ids)))
        if bad.size:
            row = int(bad[0])
            raise CacheError(
                f"{t.path}: row {row} points to clip {index[row]}, but {a.path} has {len(ids)}"
            )
    else:
        index = np.full(t.n, NO_CLIP, np.int64)
    return [str(c) for c in captions], index


def _provenance(
    src: Source, encoder: str, sha256: str, pooling: str, names: ClipNames | None
) -> dict:
    """set_attrs keywords: what was given here; the source's metadata only as untrusted JSON."""
    foreign = src.meta.get("attrs", {})
    origin = {"file": str(src.path), "sha256": file_sha256(src.path), "format": src.kind}
    if names is not None:
        origin["caption_file"] = names.source
    settings: dict = {"imported_from": str(src.path), "source_format": src.kind}
    out = {
        "encoder": encoder or "imported",
        "feature_kind": pooling or "imported",
        "checkpoint_sha256": sha256 if encoder else "",
        "imported_from": json.dumps(origin, sort_keys=True),
    }
    if encoder:
        settings["name"] = encoder
    if pooling:
        settings["pooling"] = pooling
    rate = foreign.get("sample_rate") if isinstance(foreign, dict) else None
    if isinstance(rate, int) and not isinstance(rate, bool) and rate > 0:
        out["sample_rate"] = rate  # a number describing the rows, nothing to load
    if foreign:
        out["imported_metadata"] = json.dumps(
            {"untrusted": "as the source file stated it; not used by diffatr", "attrs": foreign},
            sort_keys=True,
            default=str,
        )
    return {**out, "settings": settings}
