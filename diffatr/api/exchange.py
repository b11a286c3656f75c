"""Exports to other tools' formats and imports of their arrays, as `diffatr cache export` and
`diffatr cache import` run them.

Reads: a cache (export), or embedding files another tool wrote (import). Writes: files in a
folder (export), one new cache (import), each atomically.
"""

import os
from pathlib import Path

from .caches import CacheView, cache_path, open_cache


def export(
    cache, out: str | os.PathLike, format: str = "npz", *, index_factory: str = "Flat"
) -> list[Path]:
    """Write the cache's embeddings, names and caption -> clip index into the folder `out`.

    format: npz, npy, tsv (Embedding Projector), parquet, safetensors or faiss (the last three
    need `pip install 'diffatr[export]'`); index_factory: the FAISS index to build. Returns
    the files written.
    """
    from ..cache import export as run_export

    return run_export(cache_path(cache), format, out, index_factory)


def import_arrays(
    out: str | os.PathLike,
    audio: str | os.PathLike,
    text: str | os.PathLike,
    *,
    captions: str | os.PathLike | None = None,
    caption_format: str = "auto",
    space: str = "joint",
    audio_encoder: str = "",
    text_encoder: str = "",
    pooling: str = "",
    dataset: str = "",
    split: str = "",
    dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = False,
) -> CacheView:
    """Build the cache `out` from embedding files (.npy, .npz, .parquet) and return it opened.

    With `captions` (a caption file `diffatr extract` reads), audio rows follow its clips and
    text rows its captions; the options are `diffatr cache import`'s.
    """
    from ..cache.importer import ImportConfig
    from ..extract.import_cache import import_cache

    cfg = ImportConfig(
        space=space,
        audio_encoder=audio_encoder,
        text_encoder=text_encoder,
        pooling=pooling,
        dataset=dataset,
        split=split,
        dtype=dtype,
    )
    import_cache(out, audio, text, cfg, captions, caption_format, overwrite, progress)
    return open_cache(out)
