"""NT-Xent over a batch's pair scores (Chen et al. 2020; the contrastive loss of method.md).

Reads and writes nothing.

    S        (B, B) pair scores s(caption i, clip j), cosines in [-1, 1]; pair i is (i, i)
    tau      temperature (0.07)
    siblings (B, B) bool: captions i != j of one clip; never a negative, in either direction
    L        = 0.5 * CE(S / tau, diag) + 0.5 * CE(S^T / tau, diag), siblings left out
"""

import torch
import torch.nn.functional as F


def nt_xent(S: torch.Tensor, tau: float, siblings: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric NT-Xent of S (B, B); `siblings` entries are removed from both softmaxes."""
    logits = S / tau  # (B, B)
    if siblings is not None:
        logits = logits.masked_fill(siblings, float("-inf"))
    target = torch.arange(len(S), device=S.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
