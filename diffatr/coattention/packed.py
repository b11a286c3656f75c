"""The co-attention head's pair scores over real positions only: the re-ranking's fast path.

Reads and writes nothing. Same math as `CoAttentionHead.pair_scores` (method.md, "The
co-attention head"); only the layout differs. Every unit but the attention itself is per
position (the projections, the residual sums, the LayerNorms, the FFN), so those run on the
real positions of a block of P pairs packed into rows, (R, d) with R = sum of the pairs'
lengths, and only `scaled_dot_product_attention` sees padded (P, h, n, d_h) tensors, its
padded keys masked out. Padded positions are never computed, so nothing needs zeroing: a
padded key's value is multiplied by an attention weight of exactly 0, and a padded query's
output is never read. In re-ranking a caption has ~30% padding against the longest in its
block and a clip ~15% (`bench/bench_coattention.py`'s lengths), and the per-position units are
~90% of a pair's FLOPs (~60% of its time on the padded path; docs/speed.md).

    states  every item of a side, ragged: x (sum n_i, d), the first module's SA output, and its
            first GA projections q, k, v (each (sum n_i, d)), offsets (N + 1,)
    Layout  one side of a block of pairs: which positions are real as queries (P, n: the
            block's longest) and as keys (P, m: the side's longest item), and the packed row
            of each, so rows -> (P, n | m, ...) is one gather and back one boolean index
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import CoAttentionHead, ItemState, masked_mean
from .units import Sublayers


@dataclass
class RaggedStates:
    """Per-item states of one side, ragged: rows of every item one after another."""

    x: torch.Tensor  # (sum n_i, d) SA output of the first module
    q: torch.Tensor  # (sum n_i, d) this side's queries in its own first GA
    k: torch.Tensor  # (sum n_i, d) this side as keys in the other side's first GA
    v: torch.Tensor  # (sum n_i, d) ... and as values
    offsets: torch.Tensor  # (N + 1,) int64

    @classmethod
    def of(cls, state: ItemState) -> "RaggedStates":
        """The real positions of padded item states, item after item."""
        mask = state.mask
        q, k, v = (_merge(t)[mask] for t in (state.q, state.k, state.v))
        offsets = torch.zeros(len(mask) + 1, dtype=torch.long, device=mask.device)
        offsets[1:] = mask.sum(1).cumsum(0)
        return cls(state.x[mask], q, k, v, offsets)

    @classmethod
    def cat(cls, parts: list["RaggedStates"]) -> "RaggedStates":
        """Items of `parts`, one part after another."""
        ends = torch.stack([p.offsets[-1] for p in parts]).cumsum(0)
        offsets = [parts[0].offsets[:1]] + [
            p.offsets[1:] + end - p.offsets[-1] for p, end in zip(parts, ends, strict=True)
        ]
        rows = {name: torch.cat([getattr(p, name) for p in parts]) for name in "xqkv"}
        return cls(**rows, offsets=torch.cat(offsets))

    def __post_init__(self):
        lengths = self.offsets[1:] - self.offsets[:-1]
        self.longest = int(lengths.max()) if len(lengths) else 0

    def layout(self, items: torch.Tensor) -> tuple["Layout", torch.Tensor]:
        """The layout of pairs whose item on this side is `items` (P,), and where each pair's
        item starts in the state rows (P,)."""
        starts = self.offsets[items]
        return Layout(self.offsets[items + 1] - starts, self.longest), starts


class Layout:
    """One side's positions in a block of P pairs. As queries they are padded to the block's
    longest, n; as keys to the side's longest item, m, whatever the block: the attention's
    rounding depends on the padded key length, so this way a pair's score does not depend on
    which pairs share its block (tested with blocks of 24 pairs), and a score computed once
    can be reused. Blocks of fewer than ~16 pairs may round differently in the last bit (a
    product of a few rows takes another kernel: measured with 1-8 pairs a block)."""

    def __init__(self, lengths: torch.Tensor, longest: int):
        n = int(lengths.max()) if len(lengths) else 0
        pos = torch.arange(max(n, longest), device=lengths.device)
        self.mask = pos[None, :n] < lengths[:, None]  # (P, n) real positions, as queries
        self.key_mask = pos[None, :longest] < lengths[:, None]  # (P, m) ... as keys
        starts = lengths.cumsum(0) - lengths  # each pair's first packed row
        self.row = self.rows(starts)  # (P, n)
        self.key_row = self.rows(starts, keys=True)  # (P, m)

    def rows(self, starts: torch.Tensor, keys: bool = False) -> torch.Tensor:
        """Row starts[p] + i of each real position i, padded ones row 0 (finite, unused)."""
        mask = self.key_mask if keys else self.mask
        pos = torch.arange(mask.shape[1], device=mask.device)
        return torch.where(mask, starts[:, None] + pos, 0)

    def pad(self, rows: torch.Tensor, keys: bool = False) -> torch.Tensor:
        """Packed rows (R, ...) -> (P, n or m, ...)."""
        return rows[self.key_row if keys else self.row]

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """(P, n, ...) -> (R, ...), real positions only, pair by pair."""
        return padded[self.mask]


def attend(
    unit: Sublayers, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, x: Layout, y: Layout
):
    """W_o MHA of x's real positions (R_x, d), given padded q (P, n, d), k and v (P, m, d)."""
    att = unit.att
    out = F.scaled_dot_product_attention(
        att.split(q), att.split(k), att.split(v), attn_mask=y.key_mask[:, None, None, :]
    )  # (P, h, n, d_h)
    rows = x.pack(out.transpose(1, 2))  # (R_x, h, d_h)
    return att.o(rows.reshape(len(rows), -1))


def sublayers(unit: Sublayers, x: torch.Tensor, xl: Layout, y: torch.Tensor, yl: Layout):
    """LN(x + MHA(x, y, y)); LN(x + FFN(x)) of packed rows x (R_x, d) and y (R_y, d)."""
    att = unit.att
    q, k, v = xl.pad(att.q(x)), yl.pad(att.k(y), keys=True), yl.pad(att.v(y), keys=True)
    return unit.finish(x, attend(unit, q, k, v, xl, yl))


def pair_scores(
    head: CoAttentionHead,
    text: RaggedStates,
    audio: RaggedStates,
    text_rows: torch.Tensor,
    audio_rows: torch.Tensor,
) -> torch.Tensor:
    """s(caption text_rows[p], clip audio_rows[p]) for P pairs -> (P,)."""
    tl, t_starts = text.layout(text_rows)
    al, a_starts = audio.layout(audio_rows)
    t_q, t_k = tl.rows(t_starts), tl.rows(t_starts, keys=True)  # state rows, (P, n), (P, m)
    a_q, a_k = al.rows(a_starts), al.rows(a_starts, keys=True)
    m = head.blocks[0]
    t = attend(m.ga_text, text.q[t_q], audio.k[a_k], audio.v[a_k], tl, al)  # (R_t, d)
    t = m.ga_text.finish(text.x[t_q[tl.mask]], t)
    a = attend(m.ga_audio, audio.q[a_q], text.k[t_k], text.v[t_k], al, tl)  # (R_a, d)
    a = m.ga_audio.finish(audio.x[a_q[al.mask]], a)
    for layer in range(1, head.depth):
        module = head.module_at(layer)
        t1, a1 = sublayers(module.sa_text, t, tl, t, tl), sublayers(module.sa_audio, a, al, a, al)
        t, a = sublayers(module.ga_text, t1, tl, a1, al), sublayers(module.ga_audio, a1, al, t1, tl)
    return F.cosine_similarity(_mean(t, tl), _mean(a, al), dim=-1)


def _merge(t: torch.Tensor) -> torch.Tensor:
    """(N, h, n, d_h) -> (N, n, h d_h)."""
    N, h, n, dh = t.shape
    return t.transpose(1, 2).reshape(N, n, h * dh)


def _mean(rows: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Each pair's mean over its real rows (P, d), summed as `masked_mean` sums, over the
    side's longest (so the sum's length does not depend on the block either)."""
    return masked_mean(layout.pad(rows, keys=True), layout.key_mask)
