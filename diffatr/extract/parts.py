"""Encode chunks of clips and write each as one small, complete cache (a "part").

Reads: the audio files of the chunks (decoded in DataLoader worker processes, so decoding
overlaps the encoder) and the chunks' captions. Writes: one cache per chunk through
`CacheWriter` (atomic), with the chunk's skipped clips in its root attributes.

Per chunk of clips (rows `lo..hi` of the caption table, input order):
1. audio: each clip is decoded and `prepare`d in a worker; clips of identical length are batched
   (`LengthBuckets`) and embedded; a clip that cannot be used (`BadClip`, or no file found) is
   reported by name and left out, with its captions.
2. text: the captions of the clips that remain are embedded in one call.
3. the part is written in input order: /audio rows, /text rows with audio_index = the clip's row
   in the part (the merge shifts it), root attributes skipped_clips (JSON list of
   {"clip_id", "reason"}) and skipped_captions (their captions' count). A text-only part stores
   audio_index -1 and the clip id of each caption in caption_clip_ids (JSON list).
"""

import ctypes
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..cache import NO_CLIP, CacheWriter
from .audio_io import ClipDataset
from .batching import LengthBuckets
from .captions import ClipEntry

PENDING_BATCHES = 4  # clips waiting for a same-length partner: at most this many batches' worth


@dataclass
class ChunkResult:
    """One chunk encoded: features by table row, skipped clips by table row."""

    rows: range  # rows of the caption table
    audio: dict[int, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)  # row -> reason


@dataclass(frozen=True)
class PartSpec:
    """What every part of one run shares."""

    dataset: str
    split: str
    dtype: str  # "float32" | "float16"
    audio_provenance: dict | None  # None: no /audio (text-only)
    text_provenance: dict | None  # None: no /text (audio-only)
    text_batch_size: int
    space: str = "backbone"  # embedding_space of the cache: "backbone" or "joint"


def warn(message: str) -> None:
    """One warning line that does not break the progress bar."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


def _as_is(item):
    return item


def _die_with_parent(parent: int, _worker_id: int) -> None:
    """Linux: the kernel kills a decoding worker when the main process dies. Without this, a
    worker whose parent got kill -9 can hang forever on a full result pipe."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def encode_audio_chunks(
    clips: Sequence[ClipEntry],
    chunks: Sequence[range],
    encoder,
    *,
    batch_size: int,
    workers: int,
    on_clips: Callable[[int], None],
    looked_for: dict[str, list[str]] | None = None,
) -> Iterator[ChunkResult]:
    """Yield the chunks in order with their clip features; decoding runs `workers` ahead.
    `looked_for` (clip id -> paths tried) names the paths in a missing clip's warning."""
    wanted = [row for rows in chunks for row in rows if clips[row].audio_path is not None]
    dataset = ClipDataset(
        [clips[row].audio_path for row in wanted], encoder.sample_rate, encoder.prepare
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,  # one clip per item: batches form by length in the main process
        num_workers=workers,
        collate_fn=_as_is,
        prefetch_factor=(batch_size // workers + 2) if workers else None,
        worker_init_fn=functools.partial(_die_with_parent, os.getpid()),
    )
    decoded = iter(loader)
    for rows in chunks:
        result = ChunkResult(rows)
        buckets = LengthBuckets(batch_size, PENDING_BATCHES * batch_size)

        def run(batch: tuple[list[int], np.ndarray], result: ChunkResult = result) -> None:
            members, waves = batch
            emb, frames = encoder.embed(torch.from_numpy(waves))  # (B, D), [(T', Df)] * B
            for k, row in enumerate(members):
                result.audio[row] = (emb[k], None if frames is None else frames[k])
            on_clips(len(members))

        for row in rows:
            if clips[row].audio_path is None:
                tried = (looked_for or {}).get(clips[row].clip_id)
                where = f"; looked for {', '.join(tried[:4])}" if tried else ""
                _skip(result, clips[row], row, f"no audio file found for this clip{where}")
                on_clips(1)
                continue
            local, wave, error = next(decoded)
            if wanted[local] != row:  # the loader keeps order; anything else is a bug
                raise RuntimeError(f"decoded clip {wanted[local]} while expecting {row}")
            if wave is None:
                _skip(result, clips[row], row, error)
                on_clips(1)
                continue
            for batch in buckets.add(row, wave):
                run(batch)
        for batch in buckets.flush():
            run(batch)
        yield result


def _skip(result: ChunkResult, clip: ClipEntry, row: int, reason: str) -> None:
    result.skipped[row] = reason
    n = len(clip.captions)
    left_out = f"; its {n} caption(s) are left out" if n else ""  # none in a folder index
    warn(f"skipped clip {clip.clip_id} ({reason}){left_out}")


def write_part(
    path: Path, clips: Sequence[ClipEntry], result: ChunkResult, spec: PartSpec, text_encoder
) -> tuple[int, int]:
    """Write one chunk as a complete cache; return (clips written, captions written)."""
    kept = [row for row in result.rows if row not in result.skipped]
    skipped = [
        {"clip_id": clips[row].clip_id, "reason": result.skipped[row]} for row in result.skipped
    ]
    with CacheWriter(
        path, dataset=spec.dataset, split=spec.split, space=spec.space, dtype=spec.dtype
    ) as writer:
        root = {
            "skipped_clips": json.dumps(skipped, ensure_ascii=False),
            "skipped_captions": sum(len(clips[row].captions) for row in result.skipped),
        }
        if spec.audio_provenance is not None:
            writer.set_attrs("audio", **spec.audio_provenance)
            frames = [result.audio[row][1] for row in kept]
            writer.add_audio(
                [clips[row].clip_id for row in kept],
                np.stack([result.audio[row][0] for row in kept]) if kept else np.zeros((0, 1)),
                frames if kept and frames[0] is not None else None,
            )
        n_captions = 0
        if spec.text_provenance is not None:
            writer.set_attrs("text", **spec.text_provenance)
            captions, index = [], []
            for clip_row, row in enumerate(kept):
                captions += clips[row].captions
                index += [clip_row if spec.audio_provenance else NO_CLIP] * len(clips[row].captions)
            if spec.audio_provenance is None:
                ids = [clips[row].clip_id for row in kept for _ in clips[row].captions]
                root["caption_clip_ids"] = json.dumps(ids, ensure_ascii=False)
            if captions:
                emb, tokens = text_encoder.encode(captions, batch_size=spec.text_batch_size)
                writer.add_text(captions, np.asarray(index, dtype=np.int64), emb, tokens)
            n_captions = len(captions)
        writer.set_root_attrs(**root)
    return (len(kept) if spec.audio_provenance is not None else 0), n_captions
