"""The co-attention head (Sun et al. 2024; method.md, "The co-attention head"): frames and tokens,
self-attended, guided by each other, pooled, scored by cosine. Reads and writes nothing.

    f (T, Df) frames of a clip, w (L, Dl) tokens of a caption; a = W_f f, t = W_w w  (T|L, d)
    module:  t1 = SA_t(t),  a1 = SA_a(a)                       each side on its own
             t' = GA_t(t1, a1)                                  text tokens guided by audio frames
             a' = GA_a(a1, t1)                                  audio frames guided by text tokens
    single:  one module;  stacking: L modules, separate weights;  iterating: one module L times
    score:   s(w, f) = cos(mean_real(t^(L)), mean_real(a^(L)))   masked mean over real positions

Guidance mixes the caption and the clip, so s is a function of the pair. What does not depend on
the pair is computed once per item (`encode_text`, `encode_audio`: the input projection, the
first module's SA and the first GA's projections of that item), and only the rest runs once per
pair (`pair_scores`, any list of (caption, clip) pairs as index vectors): B x B training scores
cost B SA passes per side, not B^2.
"""

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .config import CoAttentionConfig
from .units import GuidedAttention, SelfAttention


@dataclass
class ItemState:
    """One side's items after the first module's self-attention: what all their pairs share."""

    x: torch.Tensor  # (N, n, d) SA output
    mask: torch.Tensor  # (N, n) bool, True at real positions
    q: torch.Tensor  # (N, h, n, d_h) this side's queries in its own GA
    k: torch.Tensor  # (N, h, n, d_h) this side as keys in the other side's GA
    v: torch.Tensor  # (N, h, n, d_h) ... and as values


class CoAttentionModule(nn.Module):
    """One co-attention module: SA of each side, then each side guided by the other."""

    def __init__(self, cfg: CoAttentionConfig):
        super().__init__()
        args = (cfg.d_model, cfg.heads, cfg.ffn, cfg.dropout)
        self.sa_text, self.sa_audio = SelfAttention(*args), SelfAttention(*args)
        self.ga_text, self.ga_audio = GuidedAttention(*args), GuidedAttention(*args)

    def forward(self, t, t_mask, a, a_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(t (N, L, d), a (N, T, d)) of N pairs -> (t', a'), same shapes."""
        t1, a1 = self.sa_text(t, t_mask), self.sa_audio(a, a_mask)
        return self.ga_text(t1, a1, a_mask), self.ga_audio(a1, t1, t_mask)


class CoAttentionHead(nn.Module):
    """Scores (caption, clip) pairs from token features (Dl wide) and frame features (Df)."""

    def __init__(self, frame_dim: int, token_dim: int, cfg: CoAttentionConfig):
        super().__init__()
        cfg.check()
        self.frame_dim, self.token_dim, self.variant = frame_dim, token_dim, cfg.variant
        self.depth = 1 if cfg.variant == "single" else cfg.layers  # modules applied
        self.frames_in = nn.Linear(frame_dim, cfg.d_model)
        self.tokens_in = nn.Linear(token_dim, cfg.d_model)
        n_modules = cfg.layers if cfg.variant == "stacking" else 1
        self.blocks = nn.ModuleList(CoAttentionModule(cfg) for _ in range(n_modules))

    def module_at(self, layer: int) -> CoAttentionModule:
        """The module applied at depth `layer` (iterating: always the one shared module)."""
        return self.blocks[layer if self.variant == "stacking" else 0]

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> ItemState:
        """tokens (N, L, Dl), mask (N, L) -> the captions' per-item state."""
        m = self.blocks[0]
        t1 = m.sa_text(self.tokens_in(tokens), mask)  # (N, L, d)
        own, other = m.ga_text.att, m.ga_audio.att
        return ItemState(
            t1, mask, own.split(own.q(t1)), other.split(other.k(t1)), other.split(other.v(t1))
        )

    def encode_audio(self, frames: torch.Tensor, mask: torch.Tensor) -> ItemState:
        """frames (N, T, Df), mask (N, T) -> the clips' per-item state."""
        m = self.blocks[0]
        a1 = m.sa_audio(self.frames_in(frames), mask)  # (N, T, d)
        own, other = m.ga_audio.att, m.ga_text.att
        return ItemState(
            a1, mask, own.split(own.q(a1)), other.split(other.k(a1)), other.split(other.v(a1))
        )

    def pair_scores(
        self,
        text: ItemState,
        audio: ItemState,
        ti: torch.Tensor | None = None,
        ai: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """s(caption ti[p], clip ai[p]) for P pairs given as item indices (P,) -> (P,).

        ti = ai = None: all Nt x Na pairs, caption-major, through broadcast views (their
        backward is a sum; an index's would scatter-add)."""
        if ti is None or ai is None:
            Nt, Na = len(text.x), len(audio.x)
            pick_t, pick_a = (
                partial(_grid, Nt=Nt, Na=Na, dim=1),
                partial(_grid, Nt=Nt, Na=Na, dim=0),
            )
        else:
            pick_t, pick_a = partial(_rows, index=ti), partial(_rows, index=ai)
        m = self.blocks[0]
        t_mask, a_mask = pick_t(text.mask), pick_a(audio.mask)  # (P, L), (P, T)
        attended = m.ga_text.att.attend(pick_t(text.q), pick_a(audio.k), pick_a(audio.v), a_mask)
        t = m.ga_text.finish(pick_t(text.x), attended)  # (P, L, d)
        attended = m.ga_audio.att.attend(pick_a(audio.q), pick_t(text.k), pick_t(text.v), t_mask)
        a = m.ga_audio.finish(pick_a(audio.x), attended)  # (P, T, d)
        for layer in range(1, self.depth):
            t, a = self.module_at(layer)(t, t_mask, a, a_mask)
        return F.cosine_similarity(masked_mean(t, t_mask), masked_mean(a, a_mask), dim=-1)

    def all_pairs(self, text: ItemState, audio: ItemState) -> torch.Tensor:
        """S (Nt, Na): every caption against every clip."""
        return self.pair_scores(text, audio).view(len(text.x), len(audio.x))


def _rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x[index]  # (P, ...)


def _grid(x: torch.Tensor, Nt: int, Na: int, dim: int) -> torch.Tensor:
    """Items x (N, ...) repeated along the other axis of the pair grid (Nt, Na) -> (Nt Na, ...)."""
    return x.unsqueeze(dim).expand(Nt, Na, *x.shape[1:]).flatten(0, 1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (N, n, d) over the real positions of mask (N, n) -> (N, d)."""
    summed = x.masked_fill(~mask.unsqueeze(-1), 0.0).sum(1)  # (N, d)
    return summed / mask.sum(1, keepdim=True).clamp_min(1).to(x.dtype)
