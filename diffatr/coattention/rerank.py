"""Top-k re-ranking with the co-attention head, as a `diffatr.evaluate.Scores`.

Reads: the frames and tokens of one cache (chunk by chunk, once) and a `CoAttentionHead`.
Writes nothing. The top-k, the blocks and the combination are `TopKScores`'s (method.md,
"Inference: re-ranking and fusion"); this module supplies the head's scores of the top-k pairs,
computed over real positions only (packed.py), each pair once: a2t's top-k pairs are mostly
t2a's too (all of them on bench_coattention's split, and with --topk all), and a pair's score
does not depend on the pairs it is batched with, so the second direction looks them up.

    S     cosine rows of a block of queries, (b, Nc);  top (b, k) their top-k candidates
    s     the head's pair scores of those candidates, (b, k), cosines in [-1, 1]
    gen     S' = the top-k ordered by s alone (TopKScores' "replace"), S elsewhere
    fusion  S' = S + alpha * softmax(s / tau) on the top-k (tau: the head's training
            temperature, so the boost is the head's own NT-Xent distribution over the top-k)

Memory: the sequences are read `chunk_items` rows at a time, and what is kept of each item is
its per-item state (`CoAttentionHead.encode_*`: the SA output and the first GA's projections,
4 x d_model floats a position, ragged), never the raw features: for the Clotho evaluation split
(1,045 clips x ~30 frames x 2048, 5,225 captions x ~20 tokens x 768) that is ~270 MB of states
at d_model = 128 (27 MB measured at a tenth of it) against ~580 MB of raw float32 features.
Evaluation splits are small and a training split is never re-ranked; every query is scored,
so every item's state is needed, and computing it once saves the per-item work of every pair.
"""

import numpy as np
import torch

from ..cache import Cache
from ..device import flush_denormal
from ..evaluate import CosineScores, TopKScores
from . import packed
from .config import CoRerankConfig
from .model import CoAttentionHead
from .packed import RaggedStates
from .sequences import pad, read_rows


@torch.no_grad()
def encode_side(
    head: CoAttentionHead, cache: Cache, side: str, chunk: int, device: torch.device | str
) -> RaggedStates:
    """Every clip's (side "audio") or caption's ("text") state, `chunk` items at a time."""
    n = cache.n_audio if side == "audio" else cache.n_text
    encode = head.encode_audio if side == "audio" else head.encode_text
    parts = []
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        arrays = read_rows(cache, side, rows)
        x, mask = pad([arrays[r] for r in rows.tolist()], device)
        with flush_denormal():
            parts.append(RaggedStates.of(encode(x, mask)))
    return RaggedStates.cat(parts)


class CoAttentionScores(TopKScores):
    """Cosine similarity re-ranked by a co-attention head, in both directions, block by block."""

    def __init__(
        self,
        text: torch.Tensor,
        audio: torch.Tensor,
        head: CoAttentionHead,
        tau: float,
        cache: Cache,
        cfg: CoRerankConfig = CoRerankConfig(),
        device: torch.device | str = "cpu",
    ):
        cfg.check()
        combine = "replace" if cfg.mode == "gen" else "fusion"
        cosine = CosineScores(text, audio, device)
        super().__init__(cosine, self._rescore, cfg.topk, combine, cfg.alpha, cfg.query_block)
        self.head, self.tau, self.cfg = head.eval(), tau, cfg
        self.states = {
            side: encode_side(head, cache, side, cfg.chunk_items, device)
            for side in ("text", "audio")
        }
        self.scored = ScoredPairs(cache.n_text, cache.n_audio)

    def _rescore(self, direction: str, row0: int, S: torch.Tensor, top) -> torch.Tensor:
        """The head's scores (b, k) of each query row's top-k (all candidates when top is None)."""
        b, n_cand = S.shape
        queries = torch.arange(row0, row0 + b, device=S.device)
        cand = torch.arange(n_cand, device=S.device).expand(b, n_cand) if top is None else top
        k = cand.shape[1]
        q_rows = queries.repeat_interleave(k)  # (b k,) query of each pair
        text_rows, audio_rows = (
            (q_rows, cand.reshape(-1)) if direction == "t2a" else (cand.reshape(-1), q_rows)
        )
        s = self.pair_scores(text_rows, audio_rows).view(b, k)
        self.scored.record("text" if direction == "t2a" else "audio", queries, cand, s)
        return s if self.cfg.mode == "gen" else torch.softmax(s / self.tau, dim=1)

    def pair_scores(self, text_rows: torch.Tensor, audio_rows: torch.Tensor) -> torch.Tensor:
        """s(caption text_rows[p], clip audio_rows[p]) (P,): pairs scored before (a2t's top-k
        pairs are mostly t2a's) looked up, the rest `pair_block` at a time (packed.py)."""
        found, s = self.scored.find(text_rows, audio_rows, self.states["text"].x.dtype)
        todo = (~found).nonzero()[:, 0]
        text, audio, step = self.states["text"], self.states["audio"], self.cfg.pair_block
        with flush_denormal():
            for p in range(0, len(todo), step):
                pairs = todo[p : p + step]
                s[pairs] = packed.pair_scores(
                    self.head, text, audio, text_rows[pairs], audio_rows[pairs]
                )
        return s


class ScoredPairs:
    """The pairs scored so far, by the query they were scored for: `record(side, queries,
    cand, s)` keeps the (b, k) candidates of the other side and their scores for queries (b,)
    of `side`; `find` looks pairs up on both sides. A pair's score does not depend on the
    pairs batched with it (packed.py: in blocks of ~16 pairs or more), so a score looked up is
    the score computing it again would give. At top-32 the tables are (N, 32) per side; with
    --topk all, N x the gallery (~55 MB a side at AudioCaps-test's size)."""

    def __init__(self, n_text: int, n_audio: int):
        self.n = {"text": n_text, "audio": n_audio}
        self.cand: dict[str, torch.Tensor] = {}  # side -> (N, k) the other side's items, -1 unset
        self.s: dict[str, torch.Tensor] = {}  # side -> (N, k) their scores

    def record(self, side: str, queries: torch.Tensor, cand: torch.Tensor, s: torch.Tensor):
        if side not in self.cand:
            shape = (self.n[side], cand.shape[1])
            self.cand[side] = torch.full(shape, -1, dtype=torch.long, device=cand.device)
            self.s[side] = torch.zeros(shape, dtype=s.dtype, device=s.device)
        self.cand[side][queries], self.s[side][queries] = cand, s

    def find(self, text_rows: torch.Tensor, audio_rows: torch.Tensor, dtype: torch.dtype):
        """(found (P,) bool, s (P,): the recorded score where found, 0 elsewhere)."""
        found = torch.zeros(len(text_rows), dtype=torch.bool, device=text_rows.device)
        s = torch.zeros(len(text_rows), dtype=dtype, device=text_rows.device)
        for side, own, other in (("text", text_rows, audio_rows), ("audio", audio_rows, text_rows)):
            if side in self.cand:
                hit = self.cand[side][own] == other[:, None]  # (P, k)
                where = hit.any(1) & ~found
                column = hit[where].to(torch.uint8).argmax(1, keepdim=True)  # the one hit
                s[where] = self.s[side][own[where]].gather(1, column)[:, 0]
                found |= where
        return found, s
