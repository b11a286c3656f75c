"""The phase-1 loss: symmetric NT-Xent on cosine similarity (method.md, "Phase 1").

Reads and writes nothing. Notation: B caption rows in a batch; t_i the projected caption of
row i, a_i the projected audio of its clip (a clip may fill several rows).

    S_ij = cos(t_i, a_j) / tau                                   (B, B)
    L_D  = 0.5 * CE(S, diag) + 0.5 * CE(S^T, diag)

Siblings: when rows i != j hold captions of the same clip, a_j *is* t_i's clip and t_j *is*
a caption of a_i. Counting them as negatives (Mei et al.'s code does: its mask is applied after
the log-softmax, so it never reaches the denominator) pushes a caption away from its own clip.
With `clip_ids`, S_ij of siblings is set to -inf, which removes it from both directions'
denominators; without, the loss is Mei et al.'s.
"""

import torch
import torch.nn.functional as F


def sibling_mask(clip_ids: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: True where rows i != j belong to the same clip."""
    same = clip_ids[:, None] == clip_ids[None, :]  # (B, B)
    return same & ~torch.eye(len(clip_ids), dtype=torch.bool, device=clip_ids.device)


def nt_xent(
    text: torch.Tensor, audio: torch.Tensor, tau: float, clip_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """L_D for text (B, J) and audio (B, J) where row i of each is a positive pair; with
    `clip_ids` (B,) the sibling entries are left out of the denominators."""
    S = F.normalize(text, dim=1) @ F.normalize(audio, dim=1).T / tau  # (B, B)
    if clip_ids is not None:
        S = S.masked_fill(sibling_mask(clip_ids), float("-inf"))
    target = torch.arange(len(S), device=S.device)
    return 0.5 * F.cross_entropy(S, target) + 0.5 * F.cross_entropy(S.T, target)
