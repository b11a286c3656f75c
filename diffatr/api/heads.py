"""Trained heads in a notebook: load a diffusion or co-attention checkpoint, re-rank with it.

Reads: a head checkpoint (`diffatr train-head` or `diffatr train-coattention`; which one is
read from its content, never its name), loaded with `torch.load(..., weights_only=True)`.
Writes nothing.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint_kinds import checkpoint_kind
from ..errors import ConfigError, UserError


@dataclass
class _LoadedHead:
    """What both kinds of loaded head share: the file, the model, its settings and record."""

    path: Path
    model: object  # the kind's own loaded checkpoint

    @property
    def config(self):
        return self.model.config

    @property
    def meta(self) -> dict:
        return self.model.meta


@dataclass
class DiffusionHead(_LoadedHead):
    """A trained DiffATR head: `config` (HeadConfig), `meta` (epoch, val_metrics, history)."""

    kind: str = "diffusion"  # model: diffatr.diffusion_head.checkpoint.Head

    @torch.no_grad()
    def rerank(
        self,
        queries,
        gallery,
        direction: str = "t2a",
        topk: int | None = 32,
        *,
        alpha: float = 1.0,
        temperature: float = 1.0,
        steps: int | None = None,
        eta: float = 0.0,
        seed: int = 0,
        mode: str = "fusion",
        compiled: bool = False,
        device: str = "cpu",
    ) -> torch.Tensor:
        """Re-ranked similarity rows (Q, G) of `queries` (Q, D) over `gallery` (G, D).

        direction "t2a": queries are captions, the gallery clips; "a2t" the other way round.
        The cosine top-k of each row is re-scored (`mode` "fusion": S + alpha *
        softmax(x0_hat / temperature), Gen+Dis; "gen": by the head alone); the rest keeps its
        cosine. These are the rows `diffatr.evaluate(cache, head=...)` ranks by.
        """
        from ..diffusion_head import RerankConfig
        from ..diffusion_head.rerank import DiffusionScores

        rerank = RerankConfig(
            topk=topk,
            alpha=alpha,
            temperature=temperature,
            steps=steps,
            eta=eta,
            seed=seed,
            mode=mode,
            compiled=compiled,
        )
        queries, gallery = _tensor(queries), _tensor(gallery)
        if direction == "t2a":
            scores = DiffusionScores(queries, gallery, self.model, rerank, device)
            return scores.t2a(0, len(queries)).cpu()
        if direction == "a2t":
            scores = DiffusionScores(gallery, queries, self.model, rerank, device)
            return scores.a2t(0, len(queries)).cpu()
        raise ConfigError(f'direction must be "t2a" or "a2t", not {direction!r}')


@dataclass
class CoAttentionHead(_LoadedHead):
    """A trained co-attention head (Sun et al.): it reads a cache's frames and tokens."""

    kind: str = "coattention"  # model: diffatr.coattention.checkpoint.CoHead

    @torch.no_grad()
    def rerank(
        self,
        cache,
        direction: str = "t2a",
        topk: int | None = 32,
        *,
        mode: str = "gen",
        alpha: float = 1.0,
        device: str = "cpu",
    ) -> torch.Tensor:
        """Re-ranked similarity rows of a whole cache: (Nt, Na) for "t2a", (Na, Nt) for "a2t".

        The head scores each query's cosine top-k from the cache's frames and tokens; "gen"
        orders them by its score alone, "fusion" adds alpha * softmax(s / tau) to the cosine.
        """
        from ..cache import Cache
        from ..coattention.config import CoRerankConfig
        from ..coattention.rerank import CoAttentionScores
        from .caches import cache_path

        if direction not in ("t2a", "a2t"):
            raise ConfigError(f'direction must be "t2a" or "a2t", not {direction!r}')
        rerank = CoRerankConfig(topk=topk, mode=mode, alpha=alpha)
        with Cache(cache_path(cache)) as c:
            data = c.load_tensors()
            model = self.model.model.to(device)
            scores = CoAttentionScores(
                data.text, data.audio, model, self.model.config.tau, c, rerank, device
            )
            n = len(data.text) if direction == "t2a" else len(data.audio)
            return getattr(scores, direction)(0, n).cpu()


def load_head(
    path: str | os.PathLike, device: str = "cpu", trust_checkpoint: bool = False
) -> DiffusionHead | CoAttentionHead:
    """Load a diffusion head (`diffatr train-head`) or a co-attention head
    (`diffatr train-coattention`); anything else raises `diffatr.UserError` naming the file.
    trust_checkpoint: allow a file that needs full unpickling (runs code from it)."""
    kind = checkpoint_kind(
        path, trust_checkpoint
    )  # None: unreadable; the diffusion loader says why
    if kind in ("diffusion_head", None):
        from ..diffusion_head.checkpoint import load_head as load_diffusion

        return DiffusionHead(Path(path), load_diffusion(path, device, trust_checkpoint))
    if kind == "coattention_head":
        from ..coattention.checkpoint import load_coattention

        return CoAttentionHead(Path(path), load_coattention(path, device, trust_checkpoint))
    raise UserError(
        f"{path}: a {kind} checkpoint, not a head (train one with `diffatr train-head` or "
        "`diffatr train-coattention`)"
    )


def head_path(head, trust: bool = False) -> tuple[Path, str]:
    """(checkpoint path, "diffusion" | "coattention") of a loaded head or a checkpoint path."""
    if isinstance(head, DiffusionHead | CoAttentionHead):
        return head.path, head.kind
    if isinstance(head, str | os.PathLike):
        kind = checkpoint_kind(head, trust)
        return Path(head), "coattention" if kind == "coattention_head" else "diffusion"
    raise UserError(f"a head is a checkpoint path or diffatr.load_head(...), not {type(head)}")


def _tensor(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    return x.float()
