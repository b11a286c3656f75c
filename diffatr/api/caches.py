"""Caches in a notebook: open one as plain arrays, or write one from arrays you already have.

Reads: a cache file (format v1), through `diffatr.cache`. Writes: a new cache from arrays
(`cache_from_arrays`), atomically (the file appears only when complete).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cache import Cache, CacheWriter
from ..errors import UserError


@dataclass
class CacheView:
    """A cache file by path, read on demand; holds no open file handle between calls.

    `clip_ids`, `captions`, `audio_index` (caption -> clip row, -1 = none) and `attrs` are read
    when opened; `audio` and `text` (the embedding matrices, numpy) on first use.
    """

    path: Path
    attrs: dict
    clip_ids: list[str]
    captions: list[str]
    audio_index: np.ndarray  # (Nt,) int64
    _arrays: dict = field(default_factory=dict, repr=False)

    @property
    def audio(self) -> np.ndarray:
        """Clip embeddings, (Na, Da)."""
        return self._embeddings("audio")

    @property
    def text(self) -> np.ndarray:
        """Caption embeddings, (Nt, Dt)."""
        return self._embeddings("text")

    def side_attrs(self, side: str) -> dict:
        """How one side ("audio" or "text") was made: encoder, feature kind, settings."""
        with Cache(self.path) as c:
            return c.side_attrs(side)

    def _embeddings(self, side: str) -> np.ndarray:
        if side not in self._arrays:
            with Cache(self.path) as c:
                self._arrays[side] = c.embeddings(side)[:]
        return self._arrays[side]

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        space = self.attrs.get("embedding_space", "?")
        return (
            f"CacheView({str(self.path)!r}: {len(self.clip_ids)} clips, "
            f"{len(self.captions)} captions, {space} space)"
        )


def open_cache(path: str | os.PathLike) -> CacheView:
    """Open a cache file: its clips, captions, caption -> clip index and attributes.

    A file that is not a diffatr cache raises `diffatr.UserError` (a `CacheError`) naming it.
    """
    with Cache(path) as c:
        ids = c.audio_ids() if c.has("audio") else []
        captions = c.captions() if c.has("text") else []
        index = c.audio_index() if c.has("text") else np.zeros(0, np.int64)
        return CacheView(Path(path), c.attrs, ids, captions, np.asarray(index, np.int64))


def cache_path(cache) -> Path:
    """A path from what the API accepts as a cache: a path, or a `CacheView`."""
    if isinstance(cache, CacheView):
        return cache.path
    if isinstance(cache, str | os.PathLike):
        return Path(cache)
    raise UserError(f"a cache is a path or diffatr.open_cache(...), not {type(cache).__name__}")


def cache_from_arrays(
    audio,
    text,
    audio_index,
    out: str | os.PathLike,
    *,
    clip_ids: list[str] | None = None,
    captions: list[str] | None = None,
    space: str = "joint",
    dataset: str = "arrays",
    split: str = "test",
    audio_encoder: str = "",
    text_encoder: str = "",
    pooling: str = "",
    dtype: str = "float32",
    overwrite: bool = False,
) -> CacheView:
    """Write the cache `out` from embeddings in memory and return it opened.

    audio (Na, Da) and text (Nt, Dt) are numpy arrays or torch tensors; audio_index (Nt,) gives
    each caption's clip row (-1: no clip). clip_ids default to "clip_00000", ...; captions to
    "caption_00000", .... `text_encoder` and `pooling` record how captions were embedded, so
    `diffatr.search` can embed questions the same way.
    """
    audio, text = _matrix(audio, "audio"), _matrix(text, "text")
    index = np.asarray(_numpy(audio_index), dtype=np.int64).reshape(-1)
    if len(index) != len(text):
        raise UserError(f"{len(text)} caption rows but {len(index)} audio_index entries")
    clip_ids = clip_ids if clip_ids is not None else [f"clip_{i:05d}" for i in range(len(audio))]
    captions = captions if captions is not None else [f"caption_{j:05d}" for j in range(len(text))]
    if len(clip_ids) != len(audio) or len(captions) != len(text):
        raise UserError(
            f"{len(clip_ids)} clip ids for {len(audio)} audio rows, {len(captions)} captions "
            f"for {len(text)} text rows: give one name per row"
        )
    if space == "joint" and audio.shape[1] != text.shape[1]:
        raise UserError(
            f"audio rows are {audio.shape[1]}-d and text rows {text.shape[1]}-d: a joint space "
            'needs one width (space="backbone" for separate encoders)'
        )
    text_settings = {"pooling": pooling} if pooling else {}
    # As `cache import` does: a text encoder found here has its weights' digest recorded, so
    # `search` may later load it by the name the cache records (diffatr/experiments/cache_models.py)
    from ..extract.text import model_digest

    digest = (model_digest(text_encoder) or "") if text_encoder else ""
    with CacheWriter(
        out, dataset=dataset, split=split, space=space, dtype=dtype, overwrite=overwrite
    ) as w:
        w.set_attrs("audio", encoder=audio_encoder, feature_kind="arrays", settings={})
        w.set_attrs(
            "text",
            encoder=text_encoder,
            feature_kind=pooling or "arrays",
            settings=text_settings,
            checkpoint_sha256=digest,
        )
        w.add_audio(clip_ids, audio)
        w.add_text(captions, index, text)
    return open_cache(out)


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _matrix(x, side: str) -> np.ndarray:
    x = _numpy(x)
    if x.ndim != 2:
        raise UserError(f"{side} embeddings must be a 2-D array (rows, dim), not {x.shape}")
    return x
