"""Describe a cache in a few lines (what `diffatr cache info` prints): attributes, shapes,
dtypes, provenance, captions per clip. Reads the names and the index, not the embeddings."""

import json
import os

import numpy as np

from .reader import Cache
from .schema import SIDES


def describe(path: str | os.PathLike) -> dict:
    """A JSON-friendly summary of the cache at `path`."""
    with Cache(path) as cache:
        info: dict = {"path": str(path), "attributes": cache.attrs}
        for side in SIDES:
            if not cache.has(side):
                continue
            rows = cache.embeddings(side)
            entry = {"rows": rows.shape[0], "dim": rows.shape[1], "dtype": str(rows.dtype)}
            if cache.has_sequences(side):
                seq = cache.h5[side][SIDES[side]["seq"]]
                entry[SIDES[side]["seq"]] = {"rows": seq.shape[0], "dim": seq.shape[1]}
            entry["provenance"] = cache.side_attrs(side)
            info[side] = entry
        if cache.has("text") and cache.has("audio"):
            index = cache.audio_index()
            per_clip = np.bincount(index[index >= 0], minlength=cache.n_audio)
            info["captions_per_clip"] = {
                "min": int(per_clip.min()) if per_clip.size else 0,
                "max": int(per_clip.max(initial=0)),
                "mean": round(float(per_clip.mean()) if per_clip.size else 0.0, 3),
                "histogram": {str(k): int(v) for k, v in enumerate(np.bincount(per_clip)) if v},
            }
            info["captions_without_clip"] = int((index < 0).sum())
    return info


def format_info(info: dict) -> str:
    """Human-readable lines for `describe`'s output."""
    a = info["attributes"]
    lines = [
        f"{info['path']}",
        f"  dataset {a.get('dataset')!r}, split {a.get('split')!r}, "
        f"space {a.get('embedding_space', '?')}, format v{a.get('format_version')}, "
        f"written {a.get('created')} by diffatr {a.get('diffatr_version')}",
    ]
    for side in SIDES:
        if side not in info:
            lines.append(f"  {side}: (not in this cache)")
            continue
        e = info[side]
        p = e["provenance"]
        line = f"  {side}: {e['rows']} x {e['dim']} {e['dtype']}"
        seq = SIDES[side]["seq"]
        if seq in e:
            line += f", {seq} {e[seq]['rows']} x {e[seq]['dim']}"
        line += f"  [encoder {p.get('encoder', '?')}, {p.get('feature_kind', '?')}]"
        lines.append(line)
    if "captions_per_clip" in info:
        c = info["captions_per_clip"]
        hist = ", ".join(f"{k}:{v}" for k, v in c["histogram"].items())
        lines.append(
            f"  captions per clip: min {c['min']}, mean {c['mean']}, max {c['max']} ({hist})"
        )
        if info["captions_without_clip"]:
            lines.append(f"  captions without a clip: {info['captions_without_clip']}")
    skipped = _skipped_clips(a.get("skipped_clips"))
    if skipped:
        first = skipped[0]
        lines.append(
            f"  skipped clips: {len(skipped)} (left out with their "
            f"{a.get('skipped_captions', '?')} captions), e.g. {first.get('clip_id')}: "
            f"{first.get('reason')} (all: --json, attributes.skipped_clips)"
        )
    return "\n".join(lines)


def _skipped_clips(value) -> list[dict]:
    """The extraction's skipped_clips attribute (JSON list of {"clip_id", "reason"})."""
    try:
        skipped = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return []
    return [s for s in skipped if isinstance(s, dict)] if isinstance(skipped, list) else []
