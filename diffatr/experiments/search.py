"""`diffatr search`: ask a cache a question in words, get its clips ranked.

Reads: a cache (its clip embeddings and the provenance of its text side), the text encoder
that provenance names (`query_encoder.py`), optionally a projection and a diffusion head.
Writes nothing (the CLI prints and writes JSON).

Steps: embed every query as the cache's captions were embedded; project it (and the clips)
when the cache holds backbone features; score all clips by cosine; optionally re-rank each
query's cosine top-k with a diffusion head (Gen+Dis fusion, as `evaluate --head`); keep the
best k per query (ties by clip order).
"""

from dataclasses import dataclass

import torch

from ..cache import Cache
from ..device import resolve_device
from ..errors import UserError
from ..evaluate.similarity import CosineScores
from ..extract.caption_files import AudioResolver, audio_candidates
from .query_encoder import query_encoder


@dataclass(frozen=True)
class SearchConfig:
    k: int = 10  # clips listed per query
    text_encoder: str = ""  # "" = the encoder the cache records
    pooling: str = ""  # "" = the pooling the cache records
    proj: str = ""  # phase-1 projection checkpoint (backbone caches)
    head: str = ""  # diffusion-head checkpoint re-ranking each query's cosine top-k
    topk: int = 32  # with head: candidates re-ranked per query
    audio_dir: str = ""  # resolve clip ids to files here
    device: str = "cpu"  # where to embed and score
    joint_model: str = ""  # "" = the joint model the cache records (loaded if its sha256 matches)
    trust_checkpoint: bool = False  # --trust-checkpoint: allow checkpoints that run code


def check_queries(queries: list[str], where: str = "query") -> list[str]:
    if not queries:
        raise UserError("no query: give QUERY arguments or --queries FILE")
    for i, q in enumerate(queries, 1):
        if not q.strip():
            raise UserError(f"{where} {i} is empty; every query needs words")
    return queries


def read_queries(path: str) -> list[str]:
    """One query a line; blank lines are refused (they would be empty queries)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the queries ({e})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return check_queries(lines, f"{path}: line")


@torch.no_grad()
def search(cache_path: str, queries: list[str], cfg: SearchConfig = SearchConfig()) -> dict:
    """{"cache", "encoder", "ranking", "results": [{"query", "hits": [{rank, clip_id, score,
    path?}]}]} for every query."""
    check_queries(queries)
    if cfg.k < 1:
        raise UserError(f"--k {cfg.k}: must be at least 1")
    device = resolve_device(cfg.device)
    with Cache(cache_path) as cache:
        encoder = query_encoder(
            cache,
            cfg.text_encoder,
            cfg.pooling,
            cfg.proj,
            str(device),
            joint_model=cfg.joint_model,
            trust=cfg.trust_checkpoint,
        )
        ids = cache.audio_ids()
        audio = torch.from_numpy(cache.embeddings("audio")[:]).float()  # (Na, Da)
    q = encoder.encode(list(queries)).float()  # (Q, D)
    if encoder.projection is not None:
        audio = encoder.projection.audio(audio.to(device)).cpu()  # (Na, J)
    if q.shape[1] != audio.shape[1]:
        raise UserError(
            f"{cache_path}: queries are {q.shape[1]}-d but the clips {audio.shape[1]}-d; "
            "a backbone cache needs --proj"
        )
    scores, ranking = CosineScores(q, audio, device), "cosine"
    if cfg.head:
        from ..diffusion_head import RerankConfig
        from ..diffusion_head.checkpoint import load_head
        from ..diffusion_head.rerank import DiffusionScores

        head = load_head(cfg.head, trust=cfg.trust_checkpoint)
        if head.dim != q.shape[1]:
            raise UserError(f"{cfg.head}: a {head.dim}-d head for a {q.shape[1]}-d joint space")
        rerank = RerankConfig(topk=cfg.topk, compiled=False)
        scores, ranking = DiffusionScores(q, audio, head, rerank, device), "diffatr"
    rows = scores.t2a(0, len(q)).float().cpu()  # (Q, Na)
    order = torch.sort(rows, dim=1, descending=True, stable=True).indices[:, : cfg.k]
    resolver = AudioResolver(cfg.audio_dir) if cfg.audio_dir else None
    results = []
    for query, row, best in zip(queries, rows, order.tolist(), strict=True):
        hits = []
        for rank, j in enumerate(best, 1):
            hit = {"rank": rank, "clip_id": ids[j], "score": round(float(row[j]), 6)}
            if resolver is not None:
                hit["path"] = resolver.find(audio_candidates(ids[j]))
            hits.append(hit)
        results.append({"query": query, "hits": hits})
    return {
        "cache": str(cache_path),
        "encoder": encoder.describe,
        "ranking": ranking,
        "results": results,
    }


def format_results(found: dict) -> str:
    """Per query: its text, then `rank  score  clip id  [path]` lines."""
    lines = [f"{found['cache']}: queries embedded with {found['encoder']}; {found['ranking']}"]
    for r in found["results"]:
        lines += ["", r["query"]]
        for h in r["hits"]:
            path = "" if "path" not in h else f"  {h['path'] or '(file not found)'}"
            lines.append(f"  {h['rank']:>3}  {h['score']:>9.4f}  {h['clip_id']}{path}")
    return "\n".join(lines)
