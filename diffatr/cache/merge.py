"""Join caches (format v1) end to end into one: the parts of a resumable or distributed
extraction, or several splits made with the same encoders.

Reads: the part caches, in the order given. Writes: one cache, through `CacheWriter` (so under
`<out>.partial` until complete). Rows are copied in blocks of bounded size (`block_bytes`), so
memory stays flat however large the parts are.

- `/audio` rows are concatenated; `/text/audio_index` is shifted by the clips of the parts
  before it (-1, "no known clip", stays -1); ragged frames/tokens and their offsets are joined.
- Every part must have the same groups, the same provenance (encoder, checkpoint, settings) per
  group and the same `embedding_space`, or the merge stops with an error naming both parts.
- Root attributes: `skipped_clips`, `caption_problems` and `caption_clip_ids` (JSON lists) are
  concatenated, `skipped_captions` summed; `dataset`/`split` that differ are joined with "+";
  any other attribute that differs between parts is dropped from the root and kept per part in
  `merged_from` (JSON). `attrs` given by the caller override the result.
"""

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .reader import Cache
from .schema import NO_CLIP, PROVENANCE_ATTRS, SIDES, CacheError
from .writer import CacheWriter

LIST_ATTRS = ("skipped_clips", "caption_problems", "caption_clip_ids")  # JSON lists: joined
SUM_ATTRS = ("skipped_captions",)  # counts: summed
JOIN_ATTRS = ("dataset", "split")  # names: "a+b" when the parts differ
_WRITER_ATTRS = ("format", "format_version", "created", "diffatr_version", "embedding_space")
_BLOCK_BYTES = 64 << 20  # rows read at once: ~64 MiB of embeddings plus sequence features


@dataclass(frozen=True)
class MergeResult:
    """What `merge` wrote."""

    out: Path
    parts: int
    n_audio: int  # clips written
    n_text: int  # captions written
    attrs: dict  # the merged root attributes (before the writer's own)


def merge(
    parts: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    dataset: str | None = None,
    split: str | None = None,
    attrs: dict | None = None,
    overwrite: bool = False,
    block_bytes: int = _BLOCK_BYTES,
) -> MergeResult:
    """Concatenate `parts` (in order) into the cache `out`; see the module docstring."""
    if not parts:
        raise CacheError("nothing to merge: give at least one part cache")
    paths = [Path(p) for p in parts]
    if Path(out).resolve() in {p.resolve() for p in paths}:
        raise CacheError(f"{out}: is also one of the parts; write the merge to a new file")
    caches = [Cache(p) for p in paths]
    try:
        sides = _common_sides(caches)
        for side in sides:
            _check_sequences(caches, side)
        provenance = {side: _common_provenance(caches, side) for side in sides}
        space = _common_root(caches, "embedding_space")
        root = _merged_root(caches)
        root.update({k: v for k, v in (("dataset", dataset), ("split", split)) if v})
        root.update(attrs or {})
        dtype = _common_dtype(caches, sides)
        with CacheWriter(
            out,
            dataset=str(root.pop("dataset", "")),
            split=str(root.pop("split", "")),
            space=space,
            dtype=dtype,
            overwrite=overwrite,
        ) as writer:
            for side in sides:
                writer.set_attrs(side, **provenance[side])
            if root:
                writer.set_root_attrs(**root)
            n_audio = n_text = 0
            for cache in caches:
                n_part = _copy_audio(cache, writer, block_bytes) if "audio" in sides else 0
                if "text" in sides:
                    n_text += _copy_text(cache, writer, n_audio, block_bytes)
                n_audio += n_part
    finally:
        for cache in caches:
            cache.close()
    return MergeResult(Path(out), len(paths), n_audio, n_text, root)


# -- checks -------------------------------------------------------------------------------
def _common_sides(caches: list[Cache]) -> list[str]:
    first = [side for side in SIDES if caches[0].has(side)]
    for cache in caches[1:]:
        mine = [side for side in SIDES if cache.has(side)]
        if mine != first:
            raise CacheError(
                f"{cache.path}: holds {_groups(mine)} but {caches[0].path} holds "
                f"{_groups(first)}; only caches with the same groups can be merged"
            )
    if not first:
        raise CacheError(f"{caches[0].path}: holds neither /audio nor /text; nothing to merge")
    return first


def _check_sequences(caches: list[Cache], side: str) -> None:
    """Ragged features (frames/tokens) must be in every part with rows, or in none."""
    keys = SIDES[side]
    with_rows = [c for c in caches if keys["names"] in c.h5[side]]
    has = [keys["seq"] in c.h5[side] for c in with_rows]
    if any(has) and not all(has):
        a, b = with_rows[has.index(True)], with_rows[has.index(False)]
        raise CacheError(
            f"{b.path}: has no /{side}/{keys['seq']} but {a.path} has; merge caches that "
            f"all hold {keys['seq']} or none"
        )


def _groups(sides: list[str]) -> str:
    return " and ".join(f"/{s}" for s in sides) or "no group"


def _common_provenance(caches: list[Cache], side: str) -> dict:
    """The side's attributes, equal in every part, as keyword arguments for `set_attrs`."""
    first = caches[0].side_attrs(side)
    for cache in caches[1:]:
        mine = cache.side_attrs(side)
        for key in sorted(set(first) | set(mine)):
            if first.get(key) != mine.get(key):
                raise CacheError(
                    f"{cache.path}: /{side} attribute {key!r} differs from {caches[0].path}'s "
                    f"({_short(mine.get(key))} vs {_short(first.get(key))}); caches made with "
                    "different encoders or settings cannot be merged"
                )
    kwargs = dict(first)
    for key in PROVENANCE_ATTRS[side]:
        kwargs.setdefault(key, "" if key != "settings" else {})
    if not isinstance(kwargs["settings"], dict):
        kwargs["settings"] = {"value": kwargs["settings"]}
    if kwargs.get("sample_rate") == "":
        kwargs.pop("sample_rate")
    return kwargs


def _short(value, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _common_root(caches: list[Cache], key: str) -> str:
    values = [cache.attrs.get(key) for cache in caches]
    for cache, value in zip(caches[1:], values[1:], strict=True):
        if value != values[0]:
            raise CacheError(
                f"{cache.path}: root attribute {key}={value!r} but {caches[0].path} has "
                f"{values[0]!r}; they must agree to be merged"
            )
    if values[0] is None:
        raise CacheError(f"{caches[0].path}: has no {key!r} root attribute; cannot merge it")
    return str(values[0])


def _merged_root(caches: list[Cache]) -> dict:
    every = [cache.attrs for cache in caches]
    keys = sorted({k for a in every for k in a} - set(_WRITER_ATTRS))
    root: dict = {}
    differing: dict[str, list] = {}
    for key in keys:
        values = [a.get(key) for a in every]
        if key in LIST_ATTRS:
            root[key] = json.dumps([x for v in values for x in _json_list(v, key)])
        elif key in SUM_ATTRS:
            root[key] = int(sum(int(v or 0) for v in values))
        elif all(v == values[0] for v in values):
            root[key] = values[0]
        elif key in JOIN_ATTRS:
            root[key] = "+".join(dict.fromkeys(str(v) for v in values if v is not None))
        else:
            differing[key] = values
    if differing:
        root["merged_from"] = json.dumps(
            [
                {"part": cache.path.name, **{k: v[i] for k, v in differing.items()}}
                for i, cache in enumerate(caches)
            ],
            default=str,
        )
    return root


def _json_list(value, key: str) -> list:
    if value is None:
        return []
    try:
        parsed = json.loads(value)
    except (TypeError, json.JSONDecodeError):
        parsed = None
    if not isinstance(parsed, list):
        raise CacheError(f"root attribute {key!r} should be a JSON list, is {_short(value)}")
    return parsed


def _common_dtype(caches: list[Cache], sides: list[str]) -> str:
    """The parts' embedding dtype; float32 when they mix float16 and float32 (lossless)."""
    dtypes = {
        cache.h5[side]["embeddings"].dtype.name
        for cache in caches
        for side in sides
        if "embeddings" in cache.h5[side]
    }
    return dtypes.pop() if len(dtypes) == 1 else "float32"


# -- copying ------------------------------------------------------------------------------
def _copy_audio(cache: Cache, writer: CacheWriter, block_bytes: int) -> int:
    group = cache.h5["audio"]
    if "ids" not in group:
        return 0
    n = len(group["ids"])
    for lo, hi, seq in _blocks(cache, "audio", block_bytes):
        ids = group["ids"].asstr()[lo:hi]
        writer.add_audio(list(ids), group["embeddings"][lo:hi], seq)
    return n


def _copy_text(cache: Cache, writer: CacheWriter, clip_offset: int, block_bytes: int) -> int:
    group = cache.h5["text"]
    if "captions" not in group:
        return 0
    for lo, hi, seq in _blocks(cache, "text", block_bytes):
        index = group["audio_index"][lo:hi].astype(np.int64)  # (n,)
        index = np.where(index == NO_CLIP, NO_CLIP, index + clip_offset)
        captions = list(group["captions"].asstr()[lo:hi])
        writer.add_text(captions, index, group["embeddings"][lo:hi], seq)
    return len(group["captions"])


def _blocks(
    cache: Cache, side: str, block_bytes: int
) -> Iterator[tuple[int, int, list[np.ndarray] | None]]:
    """Row ranges [lo, hi) of about `block_bytes` each, with their ragged rows split per row."""
    keys = SIDES[side]
    group = cache.h5[side]
    n = len(group[keys["names"]])
    emb_row = group[keys["embeddings"]].dtype.itemsize * group[keys["embeddings"]].shape[1]
    offsets = group[keys["offsets"]][:] if keys["offsets"] in group else None  # (n + 1,)
    seq_row = 0
    if offsets is not None:
        seq_row = group[keys["seq"]].dtype.itemsize * group[keys["seq"]].shape[1]
    lo = 0
    while lo < n:
        hi = lo + max(1, block_bytes // max(1, emb_row))
        if offsets is not None:
            # the largest hi whose sequence rows still fit the budget (at least one row)
            budget = offsets[lo] + block_bytes // max(1, seq_row)
            hi = min(hi, max(lo + 1, int(np.searchsorted(offsets, budget, side="right")) - 1))
        hi = min(hi, n)
        seq = None
        if offsets is not None:
            rows = group[keys["seq"]][offsets[lo] : offsets[hi]]  # (sum T_i, Df)
            seq = np.split(rows, offsets[lo + 1 : hi] - offsets[lo])
        yield lo, hi, seq
        lo = hi


__all__ = ["MergeResult", "merge"]
