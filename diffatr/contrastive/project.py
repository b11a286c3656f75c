"""Project a backbone-feature cache into the joint space with trained phase-1 heads.

Reads: a backbone cache (format v1) in blocks of rows, never whole, and a projection
checkpoint. Writes: a joint-space cache (format v1, `embedding_space="joint"`) with the same
clip ids, captions and caption -> clip rows, the projected embeddings (J-d), and the source's
frame and token features (`/audio/frames`, `/text/tokens` with their offsets) copied through
unchanged unless dropped: the co-attention head reads them from the joint cache. Provenance:
each side's encoder becomes "<backbone>+projection", its settings hold the source side's
provenance and the projection's config, file and SHA-256; the source's extra root attributes
(extraction settings, caption file, skipped clips) are kept.
"""

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..cache import Cache, CacheWriter, Rows, verify
from ..cache.schema import ROOT_ATTRS, SIDES
from ..checkpoints import file_sha256
from ..device import resolve_device
from ..errors import UserError
from .checkpoint import load_projection

CHUNK_ROWS = 8192  # embedding rows projected at once: 64 MiB of 2048-d float32
SEQUENCE_ROWS = 16384  # frame/token rows copied at once: 128 MiB of 2048-d float32
_WRITER_ROOT = {*ROOT_ATTRS, "format_version", "embedding_space"}


@dataclass(frozen=True)
class ProjectResult:
    path: Path
    n_audio: int
    n_text: int
    joint_dim: int
    sequences: tuple[str, ...]  # the sequence datasets copied, e.g. ("frames", "tokens")


def _spans(offsets: np.ndarray | None, n: int, rows: int, seq_rows: int):
    """(start, stop) blocks of at most `rows` rows and, where possible, `seq_rows` sequence
    rows (a single row longer than that is one block)."""
    start = 0
    while start < n:
        stop = min(n, start + rows)
        if offsets is not None:
            fits = int(np.searchsorted(offsets, offsets[start] + seq_rows, side="right")) - 1
            stop = max(start + 1, min(stop, fits))
        yield start, stop
        start = stop


def _check_source(src: Cache, path: Path, proj, proj_path: Path) -> None:
    if src.attrs.get("embedding_space") == "joint":
        raise UserError(
            f"{path}: already a joint-space cache (embedding_space='joint'); project a "
            "backbone-feature cache (from `diffatr extract`)"
        )
    for side in ("audio", "text"):
        if not src.has(side):
            raise UserError(
                f"{path}: has no /{side} group; projecting needs both sides (extract the "
                f"{side} side into it first)"
            )
    for side, want in (("audio", proj.audio_dim), ("text", proj.text_dim)):
        width = src.embeddings(side).shape[1]
        if width != want:
            raise UserError(
                f"{path}: {side} features are {width}-d, but the projection {proj_path} takes "
                f"{want}-d {side}: use a projection trained on caches of the same encoders"
            )


def _provenance(src: Cache, path: Path, side: str, projection: dict) -> dict:
    attrs = src.side_attrs(side)
    source = {k: attrs.get(k) for k in ("encoder", "feature_kind", "checkpoint_sha256")}
    source = {"cache": str(path), **source, "settings": attrs.get("settings")}
    return {"source": source, "projection": projection}


def project_cache(
    cache_path: str | os.PathLike,
    proj_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    sequences: bool = True,
    dtype: str | None = None,
    device: str = "auto",
    overwrite: bool = False,
    trust: bool = False,
) -> ProjectResult:
    """Write the joint-space cache of `cache_path` projected by `proj_path` to `out_path`.

    `sequences=False` drops frames and tokens; `dtype` (default: the source's) applies to
    everything stored, so a float32 source's sequences are copied bit for bit. `trust`:
    --trust-checkpoint."""
    path, proj_path, out_path = Path(cache_path), Path(proj_path), Path(out_path)
    proj = load_projection(proj_path, trust=trust)
    dev = resolve_device(device)
    heads = proj.heads.to(dev)
    verify(path).raise_if_bad()
    with Cache(path) as src:
        _check_source(src, path, proj, proj_path)
        dtype = dtype or src.embeddings("audio").dtype.name
        attrs = src.attrs
        projection = {
            "checkpoint": str(proj_path),
            "sha256": file_sha256(proj_path),
            "config": asdict(proj.config),
            "epoch": proj.meta.get("epoch"),
            "audio_dim": proj.audio_dim,
            "text_dim": proj.text_dim,
        }
        copied = tuple(
            SIDES[side]["seq"] for side in SIDES if sequences and src.has_sequences(side)
        )
        with CacheWriter(
            out_path, dataset=attrs["dataset"], split=attrs["split"], space="joint",
            dtype=dtype, overwrite=overwrite,
        ) as w:  # fmt: skip
            extra = {k: v for k, v in attrs.items() if k not in _WRITER_ROOT}
            w.set_root_attrs(
                **extra, source_cache=str(path), projection_sha256=projection["sha256"]
            )
            for side in SIDES:
                prov = src.side_attrs(side)
                w.set_attrs(
                    side,
                    encoder=f"{prov.get('encoder', 'unknown')}+projection",
                    feature_kind="joint",
                    settings={**_provenance(src, path, side, projection), "sequences": copied},
                    checkpoint_sha256=str(prov.get("checkpoint_sha256", "")),
                    sample_rate=prov.get("sample_rate") if side == "audio" else None,
                    projection_sha256=projection["sha256"],
                )
            _copy_side(src, w, "audio", heads.audio, dev, SIDES["audio"]["seq"] in copied)
            _copy_side(src, w, "text", heads.text, dev, SIDES["text"]["seq"] in copied)
            n_audio, n_text = src.n_audio, src.n_text
    return ProjectResult(out_path, n_audio, n_text, proj.joint_dim, copied)


@torch.no_grad()
def _copy_side(src: Cache, w: CacheWriter, side: str, head, device, with_seq: bool) -> None:
    """Project one side's embeddings block by block, with its names, index and sequences."""
    names = src.audio_ids() if side == "audio" else src.captions()
    index = src.audio_index() if side == "text" else None
    emb = src.embeddings(side)
    offsets = seq = None
    if with_seq:
        offsets = Rows(src, f"{side}/{SIDES[side]['offsets']}")[:]  # (n + 1,) int64
        seq = Rows(src, f"{side}/{SIDES[side]['seq']}")
    for start, stop in _spans(offsets, len(names), CHUNK_ROWS, SEQUENCE_ROWS):
        x = torch.from_numpy(emb[start:stop]).to(device, torch.float32)  # (n, D_side)
        y = head(x).cpu().numpy()  # (n, J)
        parts = None
        if seq is not None:
            lo, hi = int(offsets[start]), int(offsets[stop])
            block = seq[lo:hi]  # (sum of lengths, D_seq)
            parts = np.split(block, offsets[start + 1 : stop] - lo)
        if side == "audio":
            w.add_audio(names[start:stop], y, parts)
        else:
            w.add_text(names[start:stop], index[start:stop], y, parts)
