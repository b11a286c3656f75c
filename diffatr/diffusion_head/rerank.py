"""Top-k re-ranking with the diffusion head (method.md, "Inference: re-ranking and fusion").

Reads: embeddings in memory and a trained `Head`. Writes nothing. `DiffusionScores` is a
`diffatr.evaluate.Scores`: it hands out blocks of re-ranked similarity rows, so both protocols,
bounded memory and the chunked ranks come from the evaluation stage unchanged.

    S        cosine similarity rows of a block of queries, (b, Nc)
    top      the top-k candidates of each query by S, (b, k) (all Nc with topk=None)
    x0_hat   DDIM's final estimate over those candidates, (b, k)
    S'       fusion: S + alpha * softmax(x0_hat / temperature) on the top-k, S elsewhere;
             gen: 2 + softmax(x0_hat / temperature) on the top-k (above every cosine), S elsewhere
"""

import numpy as np
import torch

from ..device import flush_denormal
from ..evaluate import CosineScores
from .checkpoint import Head
from .config import RerankConfig
from .ddim import ddim_sample, ddim_timesteps
from .fused import GalleryDenoiser

_DIRECTION_SEED = {"t2a": 0, "a2t": 1}


def row_noise(seed: int, direction: str, row: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Noise for one query row: the same whatever block the row is computed in."""
    # numpy's SeedSequence hashes the whole (seed, direction, row) key; torch's CPU generator
    # would keep only the low 32 bits of a combined integer seed.
    rng = np.random.default_rng([seed % (1 << 64), _DIRECTION_SEED[direction], row])
    return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))


class DiffusionScores:
    """Cosine similarity re-ranked by a diffusion head, in both directions, block by block."""

    def __init__(
        self,
        text: torch.Tensor,
        audio: torch.Tensor,
        head: Head,
        cfg: RerankConfig = RerankConfig(),
        device: torch.device | str = "cpu",
    ):
        cfg.check()
        if cfg.steps is not None:
            ddim_timesteps(head.config.K, cfg.steps)  # refuses steps outside 1..K
        self.cfg, self.head = cfg, head
        self.cosine = CosineScores(text, audio, device)
        self.n_text, self.n_audio = self.cosine.n_text, self.cosine.n_audio
        if head.config.normalize:
            self.text, self.audio = self.cosine.text, self.cosine.audio
        else:
            self.text = text.to(device=device, dtype=torch.float32)  # (Nt, D)
            self.audio = audio.to(device=device, dtype=torch.float32)  # (Na, D)
        K = head.config.K
        self.betas = head.betas
        self.gallery = {
            "t2a": GalleryDenoiser(head.t2a.to(device), self.audio, K, cfg.compiled),
            "a2t": GalleryDenoiser(head.a2t.to(device), self.text, K, cfg.compiled),
        }

    def t2a(self, start: int, stop: int) -> torch.Tensor:
        return self._rerank("t2a", self.cosine.t2a(start, stop), self.text[start:stop], start)

    def a2t(self, start: int, stop: int) -> torch.Tensor:
        return self._rerank("a2t", self.cosine.a2t(start, stop), self.audio[start:stop], start)

    @torch.no_grad()
    def _rerank(
        self, direction: str, S: torch.Tensor, queries: torch.Tensor, first_row: int
    ) -> torch.Tensor:
        """S' for a block of query rows S (b, Nc), sampled query_block rows at a time."""
        out = S.clone()
        with flush_denormal():
            for s in range(0, len(S), self.cfg.query_block):
                rows = slice(s, s + self.cfg.query_block)
                self._boost(direction, out[rows], queries[rows], first_row + s)
        return out

    def _boost(self, direction: str, S: torch.Tensor, queries: torch.Tensor, row0: int) -> None:
        """Run DDIM over each row's top-k of S (b, Nc) and add (or set) the boost in place."""
        cfg, g = self.cfg, self.gallery[direction]
        b, n_cand = S.shape
        k = n_cand if cfg.topk is None else min(cfg.topk, n_cand)
        n_noise = 1 + (len(ddim_timesteps(self.head.config.K, cfg.steps)) if cfg.eta > 0 else 0)
        top = None if k == n_cand else S.topk(k, dim=1).indices  # (b, k)
        noise = torch.stack(
            [row_noise(cfg.seed, direction, row0 + i, (n_noise, k)) for i in range(b)], dim=1
        ).to(S.device)  # (n_noise, b, k)
        fn = g.model_fn(g.query_constants(queries), top)
        x0_hat = ddim_sample(fn, noise[0], self.betas, cfg.steps, cfg.eta, noise=noise[1:])
        p = torch.softmax(x0_hat / cfg.temperature, dim=-1)  # (b, k)
        if cfg.mode == "fusion":
            S.add_(cfg.alpha * p) if top is None else S.scatter_add_(1, top, cfg.alpha * p)
        else:
            S.copy_(2.0 + p) if top is None else S.scatter_(1, top, 2.0 + p)
