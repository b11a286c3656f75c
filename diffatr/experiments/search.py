"""`diffatr search` and `diffatr serve`: ask a cache a question in words or with a sound, get
its clips ranked.

Reads: a cache (its clip embeddings, captions when it has them, and the provenance of both
sides), the text encoder that provenance names (`query_encoder.py`), the audio encoder it was
extracted with for audio examples (`audio_query.py`), optionally a projection, a diffusion head
and the FAISS index beside the cache (`cache.faiss_index`). Writes nothing, except the FAISS
index when asked to build it.

`Searcher` loads all of that ONCE (the server keeps one for its lifetime); `search()` is one
Searcher answering one batch. Per query:
1. embed it: a text query as the cache's captions were embedded (`query_encoder`), or with no
   /text group (a library indexed without captions) with the text side of the joint model the
   extraction recorded; an audio example as a clip of the cache was (`audio_query`);
2. project it (and the clips) when the cache holds backbone features and --proj is given;
3. score all clips by cosine, or through the FAISS index beside the cache when there is one (or
   one is built, `build_index`); a text query is optionally re-ranked by a diffusion head
   (Gen+Dis fusion over its cosine top-k, as `evaluate --head`; always exact);
4. keep the best k (ties by clip order), with each clip's captions and, when a folder is known,
   its file.
"""

from dataclasses import dataclass

import numpy as np
import torch

from ..cache import Cache
from ..device import resolve_device
from ..errors import UserError
from ..evaluate.similarity import CosineScores
from ..evaluate.topk import topk_indices
from ..extract.caption_files import AudioResolver, audio_candidates
from .cache_models import check_recorded_model
from .query_encoder import QueryEncoder, query_encoder

HEADER = ("rank", "score", "clip", "path", "captions")  # columns of the printed table


@dataclass(frozen=True)
class SearchConfig:
    k: int = 10  # clips listed per query
    text_encoder: str = ""  # "" = the encoder the cache records
    pooling: str = ""  # "" = the pooling the cache records
    proj: str = ""  # phase-1 projection checkpoint (backbone caches)
    head: str = ""  # diffusion-head checkpoint re-ranking each text query's cosine top-k
    topk: int = 32  # with head: candidates re-ranked per query
    audio_dir: str = ""  # resolve clip ids to files here ("" = a folder index's own folder)
    device: str = "cpu"  # where to embed and score
    joint_model: str = ""  # "" = the joint model the cache records (loaded if its sha256 matches)
    trust_checkpoint: bool = False  # --trust-checkpoint: allow checkpoints that run code
    index: str = "auto"  # auto: the FAISS index beside the cache if any; exact: never; build
    index_factory: str = "Flat"  # with index="build": the faiss.index_factory string
    nprobe: int = 0  # IVF indexes: lists probed per query (0 = the index's own setting)


def check_queries(queries: list[str], where: str = "query") -> list[str]:
    if not queries:
        raise UserError("no query: give QUERY arguments, --queries FILE or --audio-example FILE")
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


def _library_text_encoder(cache: Cache, cfg: SearchConfig, device: str) -> QueryEncoder:
    """A cache without /text (a folder index): the joint model's own text side, loaded only
    when it is the model the cache recorded (or the one --joint-model names)."""
    from .audio_query import recorded_config

    joint = recorded_config(cache).joint
    model = cfg.joint_model or joint.model
    if not model:
        raise UserError(
            f"{cache.path}: holds no captions and backbone audio features, so it has no text "
            "side to embed words with; search it with --audio-example FILE (or index the "
            "folder with --joint-model)"
        )
    if cfg.proj or cfg.pooling:
        raise UserError(f"{cache.path}: a joint model's cache takes no --proj or --pooling")
    if not cfg.joint_model:
        recorded = str(cache.side_attrs("audio").get("checkpoint_sha256", ""))
        check_recorded_model(model, recorded, cache.path, "joint model", "--joint-model PATH")
    from ..extract.joint import load_joint_text_encoder

    text = load_joint_text_encoder(
        model,
        text_encoder=cfg.text_encoder or joint.text_encoder,
        device=device,
        clean_captions=joint.clean_captions,
        trust=cfg.trust_checkpoint,
    )
    return QueryEncoder(f"joint ({model})", lambda q: text.encode(q).float().cpu())


class Searcher:
    """One cache, its encoders, head and index, loaded once; `search` answers many times.
    `text` / `audio`: build the text query encoder / the audio example encoder; `lenient`:
    a side that cannot be built is left out, its reason in `refused` (the server starts with
    what works)."""

    def __init__(
        self,
        cache_path: str,
        cfg: SearchConfig = SearchConfig(),
        *,
        text: bool = True,
        audio: bool = False,
        lenient: bool = False,
    ):
        if cfg.k < 1:
            raise UserError(f"--k {cfg.k}: must be at least 1")
        if cfg.index not in ("auto", "exact", "build"):
            raise UserError(f"index {cfg.index!r}: choose auto, exact or build")
        self.cache_path, self.cfg = str(cache_path), cfg
        self.device = resolve_device(cfg.device)
        self.text_encoder = self.audio_encoder = self.head = self.index = None
        self.refused: dict[str, str] = {}  # side -> why it cannot be searched (lenient)
        with Cache(cache_path) as cache:
            if text:
                self.text_encoder = self._side("text", lenient, self._text_side, cache)
            if audio:
                self.audio_encoder = self._side("audio", lenient, self._audio_side, cache)
            if lenient and self.text_encoder is None and self.audio_encoder is None:
                raise UserError("; ".join(self.refused.values()))
            self.ids = cache.audio_ids()
            self.audio = torch.from_numpy(cache.embeddings("audio")[:]).float()  # (Na, Da)
            self.captions = self._captions(cache)
            self.audio_dir = cfg.audio_dir or self._library_folder(cache)
            self.projection = self._projection()
            if self.projection is None and cfg.index != "exact":
                self.index = self._index(cache)
        if self.projection is not None:
            with torch.no_grad():
                self.audio = self.projection.audio(self.audio.to(self.device)).cpu()  # (Na, J)
        self.resolver = AudioResolver(self.audio_dir) if self.audio_dir else None
        self.scores = CosineScores(self.audio[:0], self.audio, self.device)  # unit clip rows
        if cfg.head:
            self._load_head()

    # -- loading ---------------------------------------------------------------------------
    def _side(self, side: str, lenient: bool, build, cache: Cache):
        try:
            return build(cache)
        except UserError as e:
            if not lenient:
                raise
            self.refused[side] = str(e)
            return None

    def _text_side(self, cache: Cache) -> QueryEncoder:
        cfg, device = self.cfg, str(self.device)
        if cache.has("text"):
            return query_encoder(
                cache,
                cfg.text_encoder,
                cfg.pooling,
                cfg.proj,
                device,
                joint_model=cfg.joint_model,
                trust=cfg.trust_checkpoint,
            )
        return _library_text_encoder(cache, cfg, device)

    def _audio_side(self, cache: Cache):
        from .audio_query import AudioQueryEncoder

        return AudioQueryEncoder(cache, str(self.device), self.cfg.trust_checkpoint)

    @staticmethod
    def _captions(cache: Cache) -> list[list[str]] | None:
        if not cache.has("text"):
            return None
        per_clip: list[list[str]] = [[] for _ in range(cache.n_audio)]
        for caption, j in zip(cache.captions(), cache.audio_index().tolist(), strict=True):
            if 0 <= j < len(per_clip):
                per_clip[j].append(caption)
        return per_clip

    @staticmethod
    def _library_folder(cache: Cache) -> str:
        """A folder index's folder (its clip ids are paths in it), when it is still there."""
        import os

        folder = str(cache.attrs.get("audio_dir", ""))
        folder_index = cache.attrs.get("caption_format") == "folder"
        return folder if folder_index and folder and os.path.isdir(folder) else ""

    def _projection(self):
        if self.text_encoder is not None:
            return self.text_encoder.projection
        if self.cfg.proj:
            from ..contrastive.checkpoint import load_projection

            return load_projection(self.cfg.proj, str(self.device), self.cfg.trust_checkpoint).heads
        return None

    def _index(self, cache: Cache):
        from ..cache.faiss_index import build_index, has_index, load_index

        if self.cfg.index == "build":
            build_index(cache, self.cfg.index_factory)
        elif not has_index(cache.path):
            return None
        index, _ = load_index(cache)
        if self.cfg.nprobe and hasattr(index, "nprobe"):
            index.nprobe = self.cfg.nprobe
        elif self.cfg.nprobe:
            import faiss

            faiss.ParameterSpace().set_index_parameter(index, "nprobe", self.cfg.nprobe)
        return index

    def _load_head(self) -> None:
        from ..diffusion_head import RerankConfig
        from ..diffusion_head.checkpoint import load_head

        self.head = load_head(self.cfg.head, trust=self.cfg.trust_checkpoint)
        if self.head.dim != self.audio.shape[1]:
            raise UserError(
                f"{self.cfg.head}: a {self.head.dim}-d head for a {self.audio.shape[1]}-d joint "
                "space"
            )
        self.rerank = RerankConfig(topk=self.cfg.topk, compiled=False)

    def describe(self, text: bool = True, audio: bool = True) -> str:
        """The encoders of the query kinds asked for (of those this searcher has)."""
        sides = [(text, self.text_encoder), (audio, self.audio_encoder)]
        return "; ".join(e.describe for wanted, e in sides if wanted and e is not None)

    @property
    def ranking(self) -> str:
        return "diffatr" if self.head is not None else "cosine"

    # -- answering -------------------------------------------------------------------------
    def embed_text(self, queries: list[str]) -> torch.Tensor:
        if self.text_encoder is None:
            raise UserError(f"{self.cache_path}: this search was set up for audio examples only")
        return self._check_width(self.text_encoder.encode(list(queries)).float(), "queries")

    def embed_audio(self, paths: list[str]) -> torch.Tensor:
        if self.audio_encoder is None:
            raise UserError(f"{self.cache_path}: this search was set up for text queries only")
        q = self.audio_encoder.encode(list(paths)).float()  # (Q, Da) as the clips were
        if self.projection is not None:
            with torch.no_grad():
                q = self.projection.audio(q.to(self.device)).cpu()
        return self._check_width(q, "audio examples")

    def _check_width(self, q: torch.Tensor, what: str) -> torch.Tensor:
        if q.shape[1] != self.audio.shape[1]:
            raise UserError(
                f"{self.cache_path}: {what} are {q.shape[1]}-d but the clips "
                f"{self.audio.shape[1]}-d; a backbone cache needs --proj"
            )
        return q

    def rank(self, q: torch.Tensor, rerank: bool, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, k), clip rows (Q, k)) of the best k clips per query vector."""
        k = min(k, len(self.ids))
        if rerank and self.head is not None:
            from ..diffusion_head.rerank import DiffusionScores

            scores = DiffusionScores(q, self.audio, self.head, self.rerank, self.device)
            rows = scores.t2a(0, len(q)).float().cpu()  # (Q, Na)
        elif self.index is not None:
            from ..cache.export_faiss import unit_rows

            found, rows = self.index.search(unit_rows(q.cpu().numpy()), k)
            return found, rows
        else:  # the clips were normalised once, at start
            rows = CosineScores(q, self.audio[:0], self.device).text @ self.scores.audio.T
        order = topk_indices(rows, k).cpu()  # stable: ties by clip order
        return rows.cpu().gather(1, order).float().numpy(), order.numpy()

    def _hits(self, scores: np.ndarray, rows: np.ndarray) -> list[dict]:
        hits = []
        for rank, (score, j) in enumerate(zip(scores.tolist(), rows.tolist(), strict=True), 1):
            if j < 0:  # an approximate index with fewer than k candidates
                break
            hit = {"rank": rank, "clip_id": self.ids[j], "score": round(float(score), 6)}
            if self.resolver is not None:
                hit["path"] = self.resolver.find(audio_candidates(self.ids[j]))
            if self.captions is not None:
                hit["captions"] = self.captions[j]
            hits.append(hit)
        return hits

    @torch.no_grad()
    def search(
        self, queries: list[str] = (), examples: list[str] = (), labels=None, k: int = 0
    ) -> dict:
        """{"cache", "encoder", "ranking", "index", "results": [{"query", "kind", "hits":
        [{rank, clip_id, score, path?, captions?}]}]}: text queries, then audio examples
        (shown as `labels`, default their paths); `k` (0 = the config's) clips each."""
        queries, examples = list(queries), list(examples)
        k = k or self.cfg.k
        if k < 1:
            raise UserError(f"k {k}: must be at least 1")
        if queries:
            check_queries(queries)
        if not queries and not examples:
            check_queries([])
        results = []
        for kind, items, embed in (
            ("text", queries, self.embed_text),
            ("audio", examples, self.embed_audio),
        ):
            if not items:
                continue
            # The head was trained to denoise towards captions: it re-ranks text queries only.
            scores, rows = self.rank(embed(items), rerank=kind == "text", k=k)
            shown = items if kind == "text" or labels is None else list(labels)
            for item, s, r in zip(shown, scores, rows, strict=True):
                results.append({"query": item, "kind": kind, "hits": self._hits(s, r)})
        return {
            "cache": self.cache_path,
            "encoder": self.describe(bool(queries), bool(examples)),
            "ranking": self.ranking if queries else "cosine",  # the head ranks text only
            "index": "faiss" if self.index is not None else "exact",
            "results": results,
        }


def search(
    cache_path: str,
    queries: list[str],
    cfg: SearchConfig = SearchConfig(),
    examples: list[str] = (),
) -> dict:
    """Rank the cache's clips for text `queries` and audio `examples` (files); see `Searcher`."""
    if queries:
        check_queries(queries)
    elif not examples:
        check_queries([])
    searcher = Searcher(cache_path, cfg, text=bool(queries), audio=bool(examples))
    return searcher.search(queries, examples)


def _cell(text: str, width: int) -> str:
    return text if len(text) >= width else text.ljust(width)


def format_results(found: dict) -> str:
    """Per query: its text (or file), a header of column names, then one line per hit:
    rank, score, clip id, [file], [captions joined by " | "]."""
    index = "" if found.get("index", "exact") == "exact" else f" ({found['index']} index)"
    lines = [f"{found['cache']}: queries embedded with {found['encoder']}; {found['ranking']}"]
    lines[0] += index
    for r in found["results"]:
        hits = r["hits"]
        lines += ["", f"{'audio example' if r.get('kind') == 'audio' else 'query'}: {r['query']}"]
        with_path = any("path" in h for h in hits)
        with_captions = any("captions" in h for h in hits)
        width = max([len(HEADER[2])] + [len(h["clip_id"]) for h in hits])
        paths = [h.get("path") or "(file not found)" for h in hits]
        path_width = max([len(HEADER[3])] + [len(p) for p in paths])
        head = f"  {'rank':>4}  {'score':>9}  {_cell('clip', width)}"
        if with_path:
            head += f"  {_cell('path', path_width)}"
        if with_captions:
            head += "  captions"
        lines.append(head.rstrip())
        for h, path in zip(hits, paths, strict=True):
            line = f"  {h['rank']:>4}  {h['score']:>9.4f}  {_cell(h['clip_id'], width)}"
            if with_path:
                line += f"  {_cell(path, path_width)}"
            if with_captions:
                line += "  " + " | ".join(h.get("captions", []))
            lines.append(line.rstrip())
    return "\n".join(lines)
