"""Naive oracles for the co-attention head, written from method.md ("The co-attention head").

One (caption, clip) pair at a time, no padding and no masks, every head of every attention in
its own loop with an explicit softmax, the residual + LayerNorm steps spelled out, and every
module run on the pair from its inputs (no per-item factorisation). The weights are read
from the module under test; nothing else is shared with it. Use float64 and small sizes.
"""

import math

import torch
import torch.nn.functional as F

from diffatr.coattention import CoAttentionHead


def linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def mha(att, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MHA(x, y, y) for x (n, d), y (m, d): per head softmax(Q_h K_h^T / sqrt(d_h)) V_h."""
    Q, K, V = linear(att.q, x), linear(att.k, y), linear(att.v, y)
    d = x.shape[1]
    dh = d // att.heads
    heads = []
    for h in range(att.heads):
        cols = slice(h * dh, (h + 1) * dh)
        logits = Q[:, cols] @ K[:, cols].T / math.sqrt(dh)  # (n, m)
        weights = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
        weights = weights / weights.sum(dim=1, keepdim=True)
        heads.append(weights @ V[:, cols])
    return linear(att.o, torch.cat(heads, dim=1))


def layer_norm(norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def sublayers(unit, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LN(x + MHA(x, y, y)); LN(x + FFN(x)), FFN = W_2 ReLU(W_1 x) (dropout off)."""
    x = layer_norm(unit.norm1, x + mha(unit.att, x, y))
    first, last = unit.ffn.net[0], unit.ffn.net[3]
    return layer_norm(unit.norm2, x + linear(last, torch.relu(linear(first, x))))


def module(m, t: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """t1 = SA_t(t), a1 = SA_a(a); t' = GA_t(t1, a1), a' = GA_a(a1, t1)."""
    t1, a1 = sublayers(m.sa_text, t, t), sublayers(m.sa_audio, a, a)
    return sublayers(m.ga_text, t1, a1), sublayers(m.ga_audio, a1, t1)


def score(head: CoAttentionHead, tokens: torch.Tensor, frames: torch.Tensor) -> float:
    """s(w, f) = cos(mean_L t^(L), mean_T a^(L)) for tokens (L, Dl), frames (T, Df)."""
    t, a = linear(head.tokens_in, tokens), linear(head.frames_in, frames)
    for layer in range(head.depth):
        t, a = module(head.module_at(layer), t, a)
    return F.cosine_similarity(t.mean(0), a.mean(0), dim=0).item()


def score_matrix(head: CoAttentionHead, tokens: list, frames: list) -> torch.Tensor:
    """S (Nt, Na) float64, pair by pair."""
    return torch.tensor(
        [[score(head, w.double(), f.double()) for f in frames] for w in tokens], dtype=torch.float64
    )


def nt_xent(S: torch.Tensor, tau: float, clips: list[int]) -> float:
    """Both directions' mean -log softmax of each positive, siblings left out of the sums."""
    B = len(S)
    total = 0.0
    for i in range(B):
        keep = [j for j in range(B) if j == i or clips[j] != clips[i]]
        row = torch.tensor([S[i, j] / tau for j in keep], dtype=torch.float64)
        col = torch.tensor([S[j, i] / tau for j in keep], dtype=torch.float64)
        pos = keep.index(i)
        total += -(row[pos] - torch.logsumexp(row, 0)) - (col[pos] - torch.logsumexp(col, 0))
    return 0.5 * float(total) / B
