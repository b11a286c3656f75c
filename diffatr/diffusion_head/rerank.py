"""Top-k re-ranking with the diffusion head (method.md, "Inference: re-ranking and fusion").

Reads: embeddings in memory and a trained `Head`. Writes nothing. `DiffusionScores` is a
`diffatr.evaluate.Scores`: it hands out blocks of re-ranked similarity rows, so both protocols,
bounded memory and the chunked ranks come from the evaluation stage unchanged.

    S        cosine similarity rows of a block of queries, (b, Nc)
    top      the top-k candidates of each query by S, (b, k) (all Nc with topk=None)
    x0_hat   DDIM's final estimate over those candidates, (b, k)
    S'       fusion: S + alpha * softmax(x0_hat / temperature) on the top-k, S elsewhere;
             gen: 2 + softmax(x0_hat / temperature) on the top-k (above every cosine), S elsewhere

The top-k, the blocks and the combination are `diffatr.evaluate.TopKScores`'s; this module
supplies the head's scores of the top-k pairs.

x0_hat depends on the head, the queries, their top-k and the DDIM settings (steps, eta, seed),
not on how it is combined (mode, alpha, temperature): `Samples` keeps it, so Gen and Gen+Dis
of one head on one test split (the ablation's strategy table) run DDIM once.
"""

from dataclasses import replace

import numpy as np
import torch

from ..device import flush_denormal
from ..evaluate import CosineScores, TopKScores
from . import native_ddim
from .checkpoint import Head
from .config import RerankConfig
from .ddim import ddim_timesteps
from .fused import GalleryDenoiser
from .seeded_noise import block_noise

_DIRECTION_SEED = {"t2a": 0, "a2t": 1}


def row_noise(seed: int, direction: str, row: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Noise for one query row: the same whatever block the row is computed in."""
    # numpy's SeedSequence hashes the whole (seed, direction, row) key; torch's CPU generator
    # would keep only the low 32 bits of a combined integer seed.
    rng = np.random.default_rng([seed % (1 << 64), _DIRECTION_SEED[direction], row])
    return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))


def rows_noise(seed: int, direction: str, rows: range, shape: tuple[int, ...]) -> torch.Tensor:
    """`row_noise` of every row in `rows`, (len(rows), *shape): the same numbers, the hashing
    of the rows' keys done for the block at once (seeded_noise.py; ~4x faster)."""
    key = [seed % (1 << 64), _DIRECTION_SEED[direction]]
    return torch.from_numpy(block_noise(key, rows, shape))


class Samples:
    """x0_hat per (direction, first row) of the blocks one head sampled, with their top-k, for
    re-use by another `DiffusionScores` of the same head, queries and DDIM settings; one set of
    settings at a time (`for_settings` empties it when they change)."""

    def __init__(self):
        self.key: tuple | None = None
        self.blocks: dict[tuple[str, int], tuple[torch.Tensor | None, torch.Tensor]] = {}

    def for_settings(self, key: tuple) -> "Samples":
        if key != self.key:
            self.key, self.blocks = key, {}
        return self

    def get(self, direction: str, row0: int, top) -> torch.Tensor | None:
        kept = self.blocks.get((direction, row0))
        if kept is None or (kept[0] is None) != (top is None):
            return None
        same = top is None or (kept[0].shape == top.shape and torch.equal(kept[0], top))
        return kept[1] if same else None

    def put(self, direction: str, row0: int, top, x0_hat: torch.Tensor) -> None:
        self.blocks[(direction, row0)] = (None if top is None else top.clone(), x0_hat)


def sampling_key(cfg: RerankConfig) -> RerankConfig:
    """What x0_hat depends on of the settings (the combination's fields set to their defaults)."""
    return replace(cfg, mode="fusion", alpha=1.0, temperature=1.0)


class DiffusionScores(TopKScores):
    """Cosine similarity re-ranked by a diffusion head, in both directions, block by block."""

    def __init__(
        self,
        text: torch.Tensor,
        audio: torch.Tensor,
        head: Head,
        cfg: RerankConfig = RerankConfig(),
        device: torch.device | str = "cpu",
        samples: Samples | None = None,
    ):
        """samples: x0_hat already sampled by this head for these queries and DDIM settings
        (the caller keys it by head and test split; `sampling_key` gives the settings' part)."""
        cfg.check()
        if cfg.steps is not None:
            ddim_timesteps(head.config.K, cfg.steps)  # refuses steps outside 1..K
        combine = "fusion" if cfg.mode == "fusion" else "replace"
        cosine = CosineScores(text, audio, device)
        super().__init__(cosine, self._rescore, cfg.topk, combine, cfg.alpha, cfg.query_block)
        self.cfg, self.head, self.samples = cfg, head, samples
        if head.config.normalize:
            self.text, self.audio = cosine.text, cosine.audio
        else:
            self.text = text.to(device=device, dtype=torch.float32)  # (Nt, D)
            self.audio = audio.to(device=device, dtype=torch.float32)  # (Na, D)
        K = head.config.K
        self.betas = head.betas
        self.gallery = {
            "t2a": GalleryDenoiser(head.t2a.to(device), self.audio, K, cfg.compiled),
            "a2t": GalleryDenoiser(head.a2t.to(device), self.text, K, cfg.compiled),
        }

    def compiles(self) -> bool:
        """Whether re-ranking runs torch.compile'd code: a top-k of float32 CPU rows runs the C
        or numba loop (native_ddim.py) instead, the whole gallery or another device the
        compiled steps."""
        if not self.cfg.compiled:
            return False
        topk = self.cfg.topk
        gathered = topk is not None and topk < min(self.n_text, self.n_audio)
        return not (gathered and native_ddim.backend(True, self.text, self.audio))

    def _rescore(self, direction: str, row0: int, S: torch.Tensor, top) -> torch.Tensor:
        """softmax(x0_hat / temperature) of DDIM over each row's top-k, (b, k)."""
        cfg, g = self.cfg, self.gallery[direction]
        kept = None if self.samples is None else self.samples.get(direction, row0, top)
        if kept is not None:
            return torch.softmax(kept / cfg.temperature, dim=-1)
        b, k = len(S), S.shape[1] if top is None else top.shape[1]
        queries = (self.text if direction == "t2a" else self.audio)[row0 : row0 + b]  # (b, D)
        n_noise = 1 + (len(ddim_timesteps(self.head.config.K, cfg.steps)) if cfg.eta > 0 else 0)
        rows = range(row0, row0 + b)
        noise = rows_noise(cfg.seed, direction, rows, (n_noise, k))  # (b, n_noise, k)
        noise = noise.transpose(0, 1).contiguous().to(S.device)  # (n_noise, b, k)
        with flush_denormal():
            x0_hat = g.sample(queries, top, noise[0], self.betas, cfg.steps, cfg.eta, noise[1:])
            if self.samples is not None:
                self.samples.put(direction, row0, top, x0_hat)
            return torch.softmax(x0_hat / cfg.temperature, dim=-1)
