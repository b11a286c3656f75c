"""The attention units of MCAN (Yu et al., CVPR 2019) as method.md writes them.

Reads and writes nothing.

    SA(x)     = LN(x + MHA(x, x, x)); LN(x + FFN(x))              self-attention
    GA(x, y)  = LN(x + MHA(x, y, y)); LN(x + FFN(x))              the guided half
    SGA(x, y) = GA(SA(x), y)                                      self-guided attention
    FFN(x)    = W_2 ReLU(W_1 x)                                   d -> ffn -> d, per position

x (N, n, d) with mask (N, n); y (N, m, d) with mask (N, m); True marks real positions. Every
operation but the attention is per position, and the attention gives padded keys no weight, so
real positions never see padding (the masking test holds this exactly). Dropout is on each
sublayer's output before the residual sum, as in MCAN.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameters, same checkpoints) whose gradients do not depend on the
    thread count: torch's fused backward sums the weight and bias gradients in one partial per
    thread, so training's adaptive thread count (diffatr/threads.py) would change their rounding;
    as a separate multiply-add, autograd sums each feature's column in one thread, in one order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(
            self.bias, F.layer_norm(x, self.normalized_shape, eps=self.eps), self.weight
        )


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ffn: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Sublayers(nn.Module):
    """LN(x + MHA(x, y, y)); LN(x + FFN(x)): SA when y is x, GA otherwise."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.att = MultiHeadAttention(d_model, heads)
        self.norm1 = LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn, dropout)
        self.norm2 = LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Both residual steps, given MHA(x, y, y) (N, n, d) already computed."""
        x = self.norm1(x + self.drop(attended))
        return self.norm2(x + self.drop(self.ffn(x)))

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        return self.finish(x, self.att(x, y, y_mask))


class SelfAttention(Sublayers):
    """SA(x) = LN(x + MHA(x, x, x)); LN(x + FFN(x))."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, x, mask)


class GuidedAttention(Sublayers):
    """GA(x, y) = LN(x + MHA(x, y, y)); LN(x + FFN(x)): x's positions attend to y's."""
