"""Top-k re-ranking with the co-attention head, as a `diffatr.evaluate.Scores`.

Reads: the frames and tokens of one cache (chunk by chunk, once) and a `CoAttentionHead`.
Writes nothing. The top-k, the blocks and the combination are `TopKScores`'s (method.md,
"Inference: re-ranking and fusion"); this module supplies the head's scores of the top-k pairs.

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

from dataclasses import dataclass

import numpy as np
import torch

from ..cache import Cache
from ..device import flush_denormal
from ..evaluate import CosineScores, TopKScores
from .config import CoRerankConfig
from .model import CoAttentionHead, ItemState
from .sequences import pad, read_rows


@dataclass
class RaggedStates:
    """Per-item states of one side, ragged: `packed` (sum n_i, 4d) = [x | q | k | v]."""

    packed: torch.Tensor  # (sum n_i, 4 d)
    offsets: torch.Tensor  # (N + 1,) int64
    heads: int

    def gather(self, rows: torch.Tensor) -> ItemState:
        """The ItemState of items `rows` (r,), padded to their longest."""
        starts, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        n = int(lengths.max())
        pos = torch.arange(n, device=rows.device)
        mask = pos[None, :] < lengths[:, None]  # (r, n)
        index = torch.where(mask, starts[:, None] + pos[None, :], 0)  # padded rows read row 0
        x = self.packed[index].masked_fill(~mask[..., None], 0.0)  # (r, n, 4 d)
        d = x.shape[-1] // 4
        split = [p.reshape(len(rows), n, self.heads, -1).transpose(1, 2) for p in x.split(d, -1)]
        return ItemState(x[..., :d], mask, split[1], split[2], split[3])


@torch.no_grad()
def encode_side(
    head: CoAttentionHead, cache: Cache, side: str, chunk: int, device: torch.device | str
) -> RaggedStates:
    """Every clip's (side "audio") or caption's ("text") state, `chunk` items at a time."""
    n = cache.n_audio if side == "audio" else cache.n_text
    encode = head.encode_audio if side == "audio" else head.encode_text
    parts, lengths = [], []
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        arrays = read_rows(cache, side, rows)
        x, mask = pad([arrays[r] for r in rows.tolist()], device)
        with flush_denormal():
            state = encode(x, mask)
        packed = torch.cat([state.x, *(_merge(t) for t in (state.q, state.k, state.v))], -1)
        parts.append(packed[mask])  # (real positions, 4 d)
        lengths.append(mask.sum(1))
    offsets = torch.zeros(n + 1, dtype=torch.long, device=device)
    offsets[1:] = torch.cat(lengths).cumsum(0)
    heads = head.blocks[0].ga_text.att.heads
    return RaggedStates(torch.cat(parts), offsets, heads)


def _merge(t: torch.Tensor) -> torch.Tensor:
    """(N, h, n, d_h) -> (N, n, h d_h)."""
    N, h, n, dh = t.shape
    return t.transpose(1, 2).reshape(N, n, h * dh)


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
        step = self.cfg.pair_block
        with flush_denormal():
            parts = [
                self.pair_scores(text_rows[p : p + step], audio_rows[p : p + step])
                for p in range(0, len(q_rows), step)
            ]
        s = torch.cat(parts).view(b, k)
        return s if self.cfg.mode == "gen" else torch.softmax(s / self.tau, dim=1)

    def pair_scores(self, text_rows: torch.Tensor, audio_rows: torch.Tensor) -> torch.Tensor:
        """s(caption text_rows[p], clip audio_rows[p]) (P,), each item's state gathered once."""
        t_unique, ti = torch.unique(text_rows, return_inverse=True)
        a_unique, ai = torch.unique(audio_rows, return_inverse=True)
        text = self.states["text"].gather(t_unique)
        audio = self.states["audio"].gather(a_unique)
        return self.head.pair_scores(text, audio, ti, ai)
