"""`diffatr.search`: questions in words -> a cache's best clips, with their captions.

Reads: a cache, the text encoder its provenance names (or `text_encoder=`), optionally a
projection and a diffusion head. Writes nothing. The ranking is
`diffatr.experiments.search.search`'s, the one `diffatr search` prints.
"""

import os
from dataclasses import dataclass

from .caches import cache_path


@dataclass
class SearchResult:
    """Per query, its hits: `result[i]` is query i's list of {"rank", "clip_id", "score",
    "captions" (the clip's own captions in the cache), "path" (with audio_dir)}.

    `raw` is the dict `diffatr search --json` writes; `print(result)` shows its listing.
    """

    raw: dict

    @property
    def queries(self) -> list[str]:
        return [r["query"] for r in self.raw["results"]]

    def __getitem__(self, i: int) -> list[dict]:
        return self.raw["results"][i]["hits"]

    def __len__(self) -> int:
        return len(self.raw["results"])

    def __str__(self) -> str:
        from ..experiments.search import format_results

        return format_results(self.raw)


def search_config(**options):
    """A `SearchConfig` from keyword options (None = the default), as the CLI passes them."""
    from ..experiments.search import SearchConfig

    return SearchConfig(**{k: v for k, v in options.items() if v is not None})


def search(
    cache,
    queries: str | list[str],
    k: int = 10,
    *,
    text_encoder: str = "",
    pooling: str = "",
    proj: str | os.PathLike | None = None,
    head: str | os.PathLike | None = None,
    topk: int = 32,
    audio_dir: str | os.PathLike | None = None,
    device: str = "cpu",
) -> SearchResult:
    """Rank the clips of `cache` for each query, embedded as the cache's captions were.

    text_encoder / pooling replace the encoder the cache records; proj: a phase-1 projection
    (needed for a backbone-feature cache); head: a diffusion-head checkpoint that re-ranks each
    query's cosine top-k; audio_dir: resolve each clip id to its file.
    """
    from ..cache import Cache
    from ..experiments.search import search as run_search

    path = cache_path(cache)
    queries = [queries] if isinstance(queries, str) else list(queries)
    cfg = search_config(
        k=k,
        text_encoder=text_encoder,
        pooling=pooling,
        proj=str(proj or ""),
        head=str(head or ""),
        topk=topk,
        audio_dir=str(audio_dir or ""),
        device=device,
    )
    found = run_search(str(path), queries, cfg)
    with Cache(path) as c:
        captions, index = c.captions(), c.audio_index()
        ids = c.audio_ids()
    by_clip: dict[str, list[str]] = {}
    for caption, row in zip(captions, index.tolist(), strict=True):
        if row >= 0:
            by_clip.setdefault(ids[row], []).append(caption)
    for result in found["results"]:
        for hit in result["hits"]:
            hit["captions"] = by_clip.get(hit["clip_id"], [])
    return SearchResult(found)
