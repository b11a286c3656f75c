"""`diffatr cache import` with a caption file: read the file's clips as `extract` does, then
build the cache from the other tool's arrays (`diffatr.cache.importer`).

Reads: a caption file (any format `read_captions` accepts) and the embedding sources. Writes:
one cache (atomically, through the cache writer).
"""

import os
from dataclasses import replace

from ..cache.importer import ClipNames, ImportConfig, ImportSummary, import_embeddings
from .captions import read_captions
from .text import model_digest


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
    """Import `audio` and `text` into `out`; with `captions`, rows follow that file's clips.

    A --text-encoder found here (a folder, or a name in the local Hugging Face cache) has its
    weights' digest recorded, as extraction records it, so `diffatr search` may load it by the
    name the cache records; one not found here is recorded without (search then asks for it)."""
    if cfg.text_encoder and not cfg.text_encoder_sha256:
        cfg = replace(cfg, text_encoder_sha256=model_digest(cfg.text_encoder) or "")
    names = None
    if captions is not None:
        table = read_captions(captions, None, caption_format)
        names = ClipNames(
            str(captions), [c.clip_id for c in table.clips], [c.captions for c in table.clips]
        )
    return import_embeddings(out, audio, text, cfg, names, overwrite, progress)
