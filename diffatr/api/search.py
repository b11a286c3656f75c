"""`diffatr.search`: questions in words or example sounds -> a cache's best clips, with their
captions.

Reads: a cache, the encoders its provenance names (or `text_encoder=` / `joint_model=`),
optionally a projection and a diffusion head. Writes nothing. The ranking is
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
    queries: str | list[str] = (),
    k: int = 10,
    *,
    examples: list[str | os.PathLike] = (),
    text_encoder: str = "",
    pooling: str = "",
    proj: str | os.PathLike | None = None,
    head: str | os.PathLike | None = None,
    topk: int = 32,
    audio_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    joint_model: str = "",
    trust_checkpoint: bool = False,
) -> SearchResult:
    """Rank the clips of `cache` for each query, embedded as the cache's captions were, and for
    each audio file in `examples`, embedded as the cache's clips were.

    text_encoder / pooling replace the encoder the cache records; proj: a phase-1 projection
    (needed for a backbone-feature cache); head: a diffusion-head checkpoint that re-ranks each
    text query's cosine top-k; audio_dir: resolve each clip id to its file; joint_model: the
    joint model to embed queries with (default: the one the cache names, loaded only if its
    sha256 is the recorded one); trust_checkpoint: allow checkpoints that need full unpickling
    (runs code from the file). A FAISS index beside the cache is used when it matches it.
    """
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
        joint_model=joint_model,
        trust_checkpoint=trust_checkpoint,
    )
    return SearchResult(run_search(str(path), queries, cfg, examples=[str(e) for e in examples]))
