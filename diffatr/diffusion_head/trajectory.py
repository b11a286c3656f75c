"""The diffusion process of one query, step by step: the data of the paper's Figure 3.

Reads: a trained `Head` and one query's embeddings with its candidates'. Writes nothing
(`diffatr.evaluate.plots.plot_diffusion_process` draws it). Runs `ddim_sample` over the
reference `Denoiser` for one query, with the noise `DiffusionScores` draws for that query row
(`row_noise`), and records what each DDIM step sees and predicts:

    timesteps   the steps visited, K-1 first (all K, or the strided subsequence of `steps`)
    x_ks        the noisy input x_k of each step over the k candidates, (n_steps, k); x_ks[0] = x_K
    x0_hats     each step's clamped estimate x0_hat, (n_steps, k); the last one is what
                `DiffusionScores` turns into softmax(x0_hat / temperature) for this query
"""

import torch
import torch.nn.functional as F

from ..evaluate import CosineScores, topk_indices
from .checkpoint import Head
from .ddim import ddim_sample, ddim_timesteps
from .rerank import row_noise


def cosine_topk(query: torch.Tensor, gallery: torch.Tensor, k: int | None) -> torch.Tensor:
    """The query's (D,) candidates over gallery (Ng, D) in `DiffusionScores`' order: the cosine
    top-k in ranking order (`topk_indices`: ties by gallery order), or gallery order when k
    covers the gallery; (k,) int64."""
    S = CosineScores(query[None], gallery, query.device).t2a(0, 1)  # (1, Ng)
    if k is None or k >= S.shape[1]:
        return torch.arange(S.shape[1], device=S.device)
    return topk_indices(S, k)[0]


@torch.no_grad()
def diffusion_trajectory(
    head: Head,
    query: torch.Tensor,
    candidates: torch.Tensor,
    direction: str = "t2a",
    row: int = 0,
    seed: int = 0,
    steps: int | None = None,
    eta: float = 0.0,
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """(timesteps, x0_hats (n_steps, k), x_ks (n_steps, k)) for query (D,) over candidates (k, D).

    `direction` picks the denoiser ("t2a": a caption over clips, "a2t": a clip over captions)
    and, with `row` (the query's row in that direction of the split) and `seed`, the noise, so
    the result is that row's under `DiffusionScores(..., RerankConfig(seed=seed, steps=steps,
    eta=eta))` when the candidates come in `cosine_topk` order.
    """
    if direction not in ("t2a", "a2t"):
        raise ValueError(f"direction must be 't2a' or 'a2t', not {direction!r}")
    net = head.t2a if direction == "t2a" else head.a2t
    device = next(net.parameters()).device
    q = query.to(device=device, dtype=torch.float32)[None]  # (1, D)
    C = candidates.to(device=device, dtype=torch.float32)  # (k, D), shared by the one query
    if head.config.normalize:  # the unit rows DiffusionScores feeds a normalising head
        q, C = F.normalize(q, dim=1), F.normalize(C, dim=1)
    timesteps = ddim_timesteps(head.config.K, steps)
    n_noise = 1 + (len(timesteps) if eta > 0 else 0)
    noise = row_noise(seed, direction, row, (n_noise, len(C)))[:, None].to(device)  # (n, 1, k)
    x_ks, x0_hats = [], []

    def model_fn(x_k: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        x0_hat = net(x_k, step, q, C)  # (1, k)
        x_ks.append(x_k[0].clone())
        x0_hats.append(x0_hat[0].clamp(-1.0, 1.0))  # what ddim_sample uses (clip=True)
        return x0_hat

    ddim_sample(model_fn, noise[0], head.betas, steps, eta, noise=noise[1:])
    return timesteps, torch.stack(x0_hats).cpu(), torch.stack(x_ks).cpu()
