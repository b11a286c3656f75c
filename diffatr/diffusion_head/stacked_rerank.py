"""Several heads re-rank the same top-k as one batched computation: DDIM over stacked weights.

Reads: embeddings in memory and H trained `Head`s of one width and K. Writes nothing. Heads
validated or evaluated on the same cache with the same settings (the seeds of an ablation row)
share the cosine top-k of every query; only their weights and noise differ. Their
`GalleryDenoiser` constants are stacked on a leading group axis (as training's `stacked.py`),
so one DDIM run over x_k (H, b, k) samples every head's block: 1/H of the operator calls of
head by head, each H times as large (and, as fused.py's `GalleryDenoiser.sample`, one
compiled call per step, the attention logits' step-free part computed once per block).
Notation as fused.py, with the leading axis:

    KC (H, Nc, D), VCM and GC (H, Nc, 2D)     each head's per-candidate constants
    WQp (H, K, D), HEp (H, K, 2D)             each head's per-step constants
    QC (H, b, D)                              each head's query constants c_q W_Q^T
    WK (H, K, Nc)                             each head's step part of the attention logits
    x_k (H, b, k), k (H,)                     each head's noisy distribution and step

`stacked_scores` gives one `DiffusionScores` per head, each with the rows (and, as one head
alone, the metrics) of that head alone; the first head to ask for a block samples it for all
and keeps the others' (b, k) results until they ask.
"""

from dataclasses import replace

import torch

from ..compiling import first_call, is_compile_failure, warn_fallback
from ..device import flush_denormal
from . import native_ddim
from .checkpoint import Head
from .config import RerankConfig
from .ddim import ddim_coefficients, ddim_timesteps
from .fused import GalleryDenoiser, _ddim_update
from .rerank import DiffusionScores, rows_noise


class StackedGallery:
    """H `GalleryDenoiser`s over the same gallery, their constants stacked, (H, ...)."""

    def __init__(self, galleries: list[GalleryDenoiser], compiled: bool = True):
        self.compiled = compiled

        def stack(get) -> torch.Tensor:
            return torch.stack([get(g) for g in galleries])

        self.KC, self.VCM, self.GC = (
            stack(lambda g: g.KC),
            stack(lambda g: g.VCM),
            stack(lambda g: g.GC),
        )  # (H, Nc, D | 2D)
        self.WQp, self.HEp = stack(lambda g: g.WQp), stack(lambda g: g.HEp)  # (H, K, D | 2D)
        self.W_Q = stack(lambda g: g.w.W_Q)  # (H, D, D)
        self.w2, self.b2 = stack(lambda g: g.w.w2), stack(lambda g: g.w.b2)  # (H, 2D), (H,)
        self.WK = stack(lambda g: g.WK)  # (H, K, Nc), fused.py's step part of the logits
        # per step, not views (as fused.py's, so the step compiles once)
        self.HEp_steps = [self.HEp[:, k].unsqueeze(1).clone() for k in range(self.HEp.shape[1])]

    def query_constants(self, query: torch.Tensor) -> torch.Tensor:
        """QC = c_q W_Q^T for every head, (H, b, D), from the queries (b, D)."""
        return torch.matmul(query, self.W_Q.transpose(1, 2))

    @torch.no_grad()
    def sample(self, query, idx, x_T, betas, steps=None, eta=0.0, noise=None) -> torch.Tensor:
        """fused.py's `GalleryDenoiser.sample` for every head at once: x_T (H, b, k), the
        queries (b, D), idx (b, k) or None, noise (steps, H, b, k); x0_hat (H, b, k)."""
        QC = self.query_constants(query)  # (H, b, D)
        coefficients = ddim_coefficients(betas, steps, eta)
        loop = None if idx is None else native_ddim.backend(self.compiled, x_T, self.VCM)
        if loop:
            return torch.stack([self._native(loop, h, QC[h], idx, x_T, coefficients, noise)
                                for h in range(len(QC))])  # fmt: skip
        if idx is None:
            KC, VCM, GC = (x.unsqueeze(1) for x in (self.KC, self.VCM, self.GC))  # (H, 1, Nc, .)
            WK = {k: self.WK[:, k].unsqueeze(1).clone() for k, _ in coefficients}  # (H, 1, Nc)
        else:
            KC, VCM, GC = self.KC[:, idx], self.VCM[:, idx], self.GC[:, idx]  # (H, b, k, .)
            WK = {k: self.WK[:, k][:, idx] for k, _ in coefficients}  # (H, b, k) per step
        QK = (QC.unsqueeze(2) * KC).sum(-1)  # (H, b, k), once per block
        w2, b2 = self.w2[:, None, None], self.b2[:, None, None]  # (H, 1, 1, 2D), (H, 1, 1)
        # no views among the step's inputs (fused.py: a view's guards compiled the step twice)
        x_k = x0_hat = x_T.clone()
        for n, (k, c) in enumerate(coefficients):
            table = tuple(torch.tensor(v, dtype=x_T.dtype, device=x_T.device) for v in c[:4])
            args = (x_k, QK, WK[k], self.HEp_steps[k], VCM, GC, w2, b2, table)
            x0_hat, x_k = self._ddim_step(args)
            if c.sigma > 0:
                x_k = x_k + c.sigma * noise[n]
        return x0_hat

    def _native(self, loop: str, h: int, QC, idx, x_T, coefficients, noise) -> torch.Tensor:
        """Head h's block by the C or numba loop (native_ddim.py): per head, each row in the
        core's cache for all its steps, beats the stacked compiled steps over all heads."""
        args = (self.VCM[h], self.GC[h], self.WK[h], self.HEp[h], self.w2[h], self.b2[h])
        z = None if noise is None or len(noise) == 0 else noise[:, h]
        return native_ddim.ddim_rows(QC, self.KC[h], idx, *args, coefficients, x_T[h], z,
                                     loop=loop)  # fmt: skip

    def _ddim_step(self, args):
        if self.compiled:
            try:
                fn = _compiled(_ddim_step)
                return first_call("stacked_ddim_step", "the heads' kernels", fn, *args)
            except Exception as exc:  # the step is pure: eager after a compile failure
                if not is_compile_failure(exc):
                    raise
                warn_fallback(exc, "using eager code")
                self.compiled = False
        return _ddim_step(*args)


def _ddim_step(x_k, QK, WK, HEp, VCM, GC, w2, b2, c):
    """One DDIM step of every head: x_k, QK (H, b, k), WK (H, b | 1, k), HEp (H, 1, 2D), VCM
    and GC (H, b | 1, k, 2D), w2 (H, 1, 1, 2D), b2 (H, 1, 1), c as fused.py's."""
    A = torch.softmax(QK + WK + x_k, dim=-1)  # (H, b, k)
    HE = (A.unsqueeze(-1) * VCM).sum(2) + HEp  # (H, b, 2D)
    return _ddim_update(x_k, (torch.relu(HE.unsqueeze(2) + GC) * w2).sum(-1) + b2 + A, c)


_COMPILED: list = []


def _compiled(fn):
    """torch.compile'd `_ddim_step`, one per process (inductor fuses the pair loop, as
    fused.py's)."""
    if not _COMPILED:
        _COMPILED.append(torch.compile(fn, dynamic=True))
    return _COMPILED[0]


class _Shared:
    """The stacked sampler of H heads' blocks, and the results not yet handed out."""

    def __init__(self, scores: list["_HeadScores"]):
        self.scores = scores
        self.gallery = {
            d: StackedGallery([s.gallery[d] for s in scores], scores[0].cfg.compiled)
            for d in ("t2a", "a2t")
        }
        for s in scores:
            s.gallery = {}  # stacked above: one copy of the constants, not two
        self.kept: dict[tuple, list] = {}

    def rescore(self, h: int, direction: str, row0: int, S: torch.Tensor, top) -> torch.Tensor:
        key = (direction, row0, len(S))
        if key not in self.kept or self.kept[key][1 + h] is None:  # new, or asked again
            self.kept[key] = [top, *self._sample(direction, row0, S, top)]
        kept = self.kept[key]
        if (top is None) != (kept[0] is None) or (
            top is not None and not torch.equal(top, kept[0])
        ):
            raise ValueError("heads re-ranked together must share their top-k")
        out, kept[1 + h] = kept[1 + h], None
        if all(x is None for x in kept[1:]):
            del self.kept[key]
        return out

    def _sample(self, direction: str, row0: int, S: torch.Tensor, top) -> list[torch.Tensor]:
        first = self.scores[0]
        cfg, g = first.cfg, self.gallery[direction]
        b, k = len(S), S.shape[1] if top is None else top.shape[1]
        queries = (first.text if direction == "t2a" else first.audio)[row0 : row0 + b]  # (b, D)
        n_noise = 1 + (len(ddim_timesteps(first.head.config.K, cfg.steps)) if cfg.eta > 0 else 0)
        rows = range(row0, row0 + b)
        noise = torch.stack(
            [rows_noise(s.cfg.seed, direction, rows, (n_noise, k)) for s in self.scores], dim=2
        )  # (b, n_noise, H, k)
        noise = noise.permute(1, 2, 0, 3).contiguous().to(S.device)  # (n_noise, H, b, k)
        with flush_denormal():
            x0_hat = g.sample(queries, top, noise[0], first.betas, cfg.steps, cfg.eta, noise[1:])
            return list(torch.softmax(x0_hat / cfg.temperature, dim=-1))  # H x (b, k)


class _HeadScores(DiffusionScores):
    """One head's `DiffusionScores`, its blocks sampled with the other heads'."""

    shared: _Shared
    index: int

    def _rescore(self, direction: str, row0: int, S: torch.Tensor, top) -> torch.Tensor:
        return self.shared.rescore(self.index, direction, row0, S, top)


def stacked_scores(
    text: torch.Tensor,
    audio: torch.Tensor,
    heads: list[Head],
    cfgs: list[RerankConfig],
    device: torch.device | str = "cpu",
) -> list[DiffusionScores]:
    """One `DiffusionScores` per head, sampled together: heads of one width, K, schedule and
    normalisation, and settings (`cfgs`) that differ only in their seed."""
    first, cfg = heads[0], cfgs[0]
    for head, c in zip(heads, cfgs, strict=True):
        same = (head.dim, head.config.K, head.config.normalize) == (
            first.dim, first.config.K, first.config.normalize
        )  # fmt: skip
        if not same or not torch.equal(head.betas, first.betas) or replace(c, seed=cfg.seed) != cfg:
            raise ValueError("heads re-ranked together differ in more than their weights and seed")
    scores = [_HeadScores(text, audio, h, c, device) for h, c in zip(heads, cfgs, strict=True)]
    shared = _Shared(scores)
    for i, s in enumerate(scores):
        s.shared, s.index = shared, i
    return scores
