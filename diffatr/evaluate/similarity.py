"""Similarity rows on demand, so no evaluation needs the whole (Nt, Na) matrix at once.

A `Scores` object hands out blocks of rows of S (captions x clips) for text-to-audio, or of
S^T for audio-to-text. `CosineScores` computes them from embeddings; `DenseScores` wraps a
matrix a caller already has (small data, tests, or a re-ranker's output).
"""

from typing import Protocol

import torch


class Scores(Protocol):
    n_text: int
    n_audio: int

    def t2a(self, start: int, stop: int) -> torch.Tensor:
        """Rows start:stop of S: (stop - start, n_audio), caption queries over clips."""

    def a2t(self, start: int, stop: int) -> torch.Tensor:
        """Rows start:stop of S^T: (stop - start, n_text), clip queries over captions."""


class DenseScores:
    """A similarity matrix S (Nt, Na) already in memory."""

    a2t_is_transpose = True  # a2t rows are columns of t2a rows: joint_ranks.py's one pass

    def __init__(self, S: torch.Tensor):
        self.S = torch.as_tensor(S)
        if self.S.ndim != 2:
            raise ValueError(
                f"similarity matrix must be 2-D (captions, clips), is {tuple(self.S.shape)}"
            )
        self.n_text, self.n_audio = self.S.shape

    def t2a(self, start: int, stop: int) -> torch.Tensor:
        return self.S[start:stop]

    def a2t(self, start: int, stop: int) -> torch.Tensor:
        return self.S[:, start:stop].T

    def pair_scores(self, text_rows: torch.Tensor, audio_rows: torch.Tensor) -> torch.Tensor:
        """S[text_rows[k], audio_rows[k]] for each k."""
        return self.S[text_rows.to(self.S.device), audio_rows.to(self.S.device)]


class CosineScores:
    """Cosine similarity of text (Nt, D) and audio (Na, D) embeddings, in float32 on `device`."""

    a2t_is_transpose = True

    def __init__(self, text: torch.Tensor, audio: torch.Tensor, device: torch.device | str = "cpu"):
        if text.shape[1] != audio.shape[1]:
            raise ValueError(f"text is {text.shape[1]}-d and audio {audio.shape[1]}-d")
        self.text = _unit_rows(text.to(device=device, dtype=torch.float32))  # (Nt, D)
        self.audio = _unit_rows(audio.to(device=device, dtype=torch.float32))  # (Na, D)
        self.n_text, self.n_audio = len(self.text), len(self.audio)

    def t2a(self, start: int, stop: int) -> torch.Tensor:
        return self.text[start:stop] @ self.audio.T

    def a2t(self, start: int, stop: int) -> torch.Tensor:
        return self.audio[start:stop] @ self.text.T

    def pair_scores(self, text_rows: torch.Tensor, audio_rows: torch.Tensor) -> torch.Tensor:
        """cos(text[text_rows[k]], audio[audio_rows[k]]) for each k (rounded apart from t2a's
        product; joint_ranks.BAND_MARGIN covers the difference, and checks it)."""
        t = self.text[text_rows.to(self.text.device)]  # (n, D)
        return (t * self.audio[audio_rows.to(self.audio.device)]).sum(1)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows; an all-zero row stays zero (cosine 0 with everything)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
