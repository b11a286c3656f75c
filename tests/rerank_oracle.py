"""Naive, dense oracles for re-ranking with the diffusion head (method.md, "Inference: re-ranking
and fusion") and for its training batches.

Written from method.md: the whole cosine matrix S at once in float64, each query's top-k as
the head of a stable descending sort (ties by gallery order, as ranks break them), DDIM
over the reference `Denoiser.forward` (not the factorised fast path) in float64, then
S' = S + alpha * softmax(x0_hat / T) on the top-k ("fusion") or 2 + softmax(...) ("gen").
The one convention taken from the code under test is where x_K comes from: row i of a direction
draws `rerank.row_noise(seed, direction, i, (n_noise, k))`, row 0 being x_K over its k
candidates in top-k order (gallery order when k covers the whole gallery) and rows 1.. the
DDIM noise z of each step when eta > 0. Nothing here is fast; keep galleries to a few dozen.
"""

import copy
import math

import torch
import torch.nn.functional as F

from diffatr.diffusion_head import Denoiser, alphas_cumprod, make_betas
from diffatr.diffusion_head.checkpoint import Head, new_denoiser
from diffatr.diffusion_head.config import HeadConfig
from diffatr.diffusion_head.rerank import row_noise


def random_head(dim: int, K: int, std: float = 0.3, seed: int = 0, **cfg) -> Head:
    """A Head with N(0, std^2) weights and biases (the 0.02 init makes x0_hat nearly flat)."""
    g = torch.Generator().manual_seed(seed)
    nets = []
    for _ in range(2):
        net = new_denoiser(dim, K)
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * std)
        nets.append(net.eval())
    return Head(HeadConfig(K=K, **cfg), nets[0], nets[1], meta={})


def dense_cosine(text: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """S (Nt, Na) float64: cos(t_i, a_j)."""
    return F.normalize(text.double(), dim=1) @ F.normalize(audio.double(), dim=1).T


def timesteps(K: int, steps: int | None) -> list[int]:
    """DDIM's "leading" steps, K-1 .. 0 or (steps-1, ..., 0) * (K // steps)."""
    if steps is None or steps == K:
        return list(range(K - 1, -1, -1))
    return [i * (K // steps) for i in range(steps)][::-1]


def ddim(model_fn, x_T: torch.Tensor, betas: torch.Tensor, steps, eta, noise) -> torch.Tensor:
    """DDIM (Song et al. eq. 12) in float64 from x_T (B, N); noise (steps, B, N) when eta > 0.

    x0_hat = clamp(f(x_k, k)); eps_hat from the clamped x0_hat;
    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z.
    """
    abar = alphas_cumprod(betas).tolist()
    ks = timesteps(len(betas), steps)
    x = x_T.double()
    x0 = x
    for n, k in enumerate(ks):
        a, a_prev = abar[k], abar[ks[n + 1]] if n + 1 < len(ks) else 1.0
        x0 = model_fn(x, k).clamp(-1.0, 1.0)
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * noise[n].double()
    return x0


def oracle_direction(
    net: Denoiser,
    S: torch.Tensor,
    queries: torch.Tensor,
    gallery: torch.Tensor,
    betas: torch.Tensor,
    direction: str,
    topk: int | None,
    alpha: float = 1.0,
    temperature: float = 1.0,
    steps: int | None = None,
    eta: float = 0.0,
    seed: int = 0,
    mode: str = "fusion",
) -> torch.Tensor:
    """S' (Nq, Ng) float64 for one direction, queries (Nq, D) over gallery (Ng, D)."""
    m = copy.deepcopy(net).double()
    nq, ng = S.shape
    k = ng if topk is None else min(topk, ng)
    # (Nq, k): by descending S (ties by gallery order), or gallery order when nothing is selected
    order = torch.sort(S, dim=1, descending=True, stable=True).indices
    top = torch.arange(ng).expand(nq, ng) if k == ng else order[:, :k]
    n_noise = 1 + (len(timesteps(len(betas), steps)) if eta > 0 else 0)
    drawn = torch.stack([row_noise(seed, direction, i, (n_noise, k)) for i in range(nq)], 1)
    cand = gallery.double()[top]  # (Nq, k, D)
    q = queries.double()

    def model_fn(x_k: torch.Tensor, step: int) -> torch.Tensor:
        return m(x_k, torch.full((nq,), step, dtype=torch.long), q, cand)

    with torch.no_grad():
        x0_hat = ddim(model_fn, drawn[0], betas, steps, eta, drawn[1:])  # (Nq, k)
    p = torch.softmax(x0_hat / temperature, dim=1)
    out = S.clone()
    for i in range(nq):
        for j in range(k):
            c = int(top[i, j])
            out[i, c] = S[i, c] + alpha * p[i, j] if mode == "fusion" else 2.0 + p[i, j]
    return out


def oracle_scores(head: Head, text: torch.Tensor, audio: torch.Tensor, **rerank) -> dict:
    """{"t2a": S' (Nt, Na), "a2t": S'^T-side (Na, Nt)}, float64, rerank = RerankConfig fields."""
    betas = make_betas(head.config.schedule, head.config.K)
    if head.config.normalize:
        text, audio = F.normalize(text.double(), dim=1), F.normalize(audio.double(), dim=1)
    S = dense_cosine(text, audio)
    return {
        "t2a": oracle_direction(head.t2a, S, text, audio, betas, "t2a", **rerank),
        "a2t": oracle_direction(head.a2t, S.T.contiguous(), audio, text, betas, "a2t", **rerank),
    }


def check_clip_unique(batches: list[torch.Tensor], audio_index: torch.Tensor) -> list[int]:
    """Assert the batch invariants of method.md "Training loss"; return every row used."""
    used: list[int] = []
    for rows in batches:
        rows = rows.tolist()
        clips = audio_index[rows].tolist()
        assert len(rows) >= 2, f"a batch of {len(rows)} has no negatives"
        assert min(clips) >= 0, "a caption without a clip was batched"
        assert len(set(clips)) == len(clips), f"two captions of one clip in a batch: {clips}"
        used += rows
    assert len(set(used)) == len(used), "a caption appears twice in one epoch"
    return used
