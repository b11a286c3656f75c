"""`diffatr cache import` with a caption file: read the file's clips as `extract` does, then
build the cache from the other tool's arrays (`diffatr.cache.importer`).

Reads: a caption file (any format `read_captions` accepts) and the embedding sources. Writes:
one cache (atomically, through the cache writer).
"""

import os

from ..cache.importer import ClipNames, ImportConfig, ImportSummary, import_embeddings
from .captions import read_captions


def import_cache(
    out: str | os.PathLike,
    audio: str | os.PathLike,
    text: str | os.PathLike,
    cfg: ImportConfig = ImportConfig(),
    captions: str | os.PathLike | None = None,
    caption_format: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
) -> ImportSummary:
    """Import `audio` and `text` into `out`; with `captions`, rows follow that file's clips."""
    names = None
    if captions is not None:
        table = read_captions(captions, None, caption_format)
        names = ClipNames(
            str(captions), [c.clip_id for c in table.clips], [c.captions for c in table.clips]
        )
    return import_embeddings(out, audio, text, cfg, names, overwrite, progress)
