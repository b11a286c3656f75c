"""Multi-head scaled dot-product attention with key padding masks (Vaswani et al. 2017).

Reads and writes nothing. `MHA(x, y, y) = W_o concat_h softmax(Q_h K_h^T / sqrt(d_h)) V_h` with
Q = W_q x, K = W_k y, V = W_v y; keys at padded positions get no weight. The projections are
exposed apart from the attention itself so the co-attention head can project each item once
and attend per (query, candidate) pair (`model.py`).

    x        queries' sequences, (N, n, d)         y     keys' sequences, (N, m, d)
    key_mask (N, m) bool, True at real positions    h     heads, d_h = d / h
"""

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """MHA(x, y, y) with key padding masks, through `F.scaled_dot_product_attention`."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not a multiple of heads {heads}")
        self.heads = heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n, d) -> (N, h, n, d_h)."""
        N, n, d = x.shape
        return x.view(N, n, self.heads, d // self.heads).transpose(1, 2)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor
    ) -> torch.Tensor:
        """Projected, split q (N, h, n, d_h), k and v (N, h, m, d_h) -> W_o(...) (N, n, d)."""
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        N, h, n, dh = out.shape
        return self.o(out.transpose(1, 2).reshape(N, n, h * dh))  # (N, n, d)

    def forward(self, x: torch.Tensor, y: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        return self.attend(
            self.split(self.q(x)), self.split(self.k(y)), self.split(self.v(y)), key_mask
        )
