"""The phase-1 projection heads of method.md: backbone features -> the joint space.

Reads and writes nothing. Audio: `Linear(Da, 2J) -> ReLU -> Linear(2J, J)` (Da = 2048 for
CNN14/ResNet38's pre-fc1 vector); text: `Linear(Dt, 2J) -> ReLU -> Linear(2J, J)` (Dt = 768
for BERT-base, 384 for MiniLM). PyTorch's default Linear initialisation, as Mei et al.'s.
"""

import torch
from torch import nn


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class ProjectionHeads(nn.Module):
    """Both heads; parameters `audio.{0,2}.{weight,bias}` and `text.{0,2}.{weight,bias}`."""

    def __init__(self, audio_dim: int, text_dim: int, joint_dim: int = 512):
        super().__init__()
        self.audio_dim, self.text_dim, self.joint_dim = audio_dim, text_dim, joint_dim
        self.audio = _mlp(audio_dim, 2 * joint_dim, joint_dim)
        self.text = _mlp(text_dim, 2 * joint_dim, joint_dim)

    def forward(self, text: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """text (B, Dt), audio (B', Da) -> t (B, J), a (B', J), not normalised."""
        return self.text(text), self.audio(audio)
