"""Noise schedules and the forward process of the diffusion head (method.md, "Forward process").

Reads nothing, writes nothing: functions over tensors. Notation:

    K          number of diffusion steps
    beta_i     noise added at step i (i = 0..K-1), float64
    abar_k     alpha-bar_k = prod_{i<=k} (1 - beta_i)
    x0         the clean distribution over candidates (one-hot at the match), (B, N)
    x_k        x0 noised to step k: sqrt(abar_k) * x0 + sqrt(1 - abar_k) * eps
"""

import math

import torch

SCHEDULES = ("cosine", "linear")


def cosine_betas(K: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: beta_i = min(1 - abar((i+1)/K) / abar(i/K), 0.999)."""
    if K < 1:
        raise ValueError(f"K must be at least 1, got {K}")

    def abar(t: float) -> float:
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - abar((i + 1) / K) / abar(i / K), max_beta) for i in range(K)]
    return torch.tensor(betas, dtype=torch.float64)  # (K,)


def linear_betas(K: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule (diffusers' "linear"): K betas evenly spaced from start to end."""
    if K < 1:
        raise ValueError(f"K must be at least 1, got {K}")
    return torch.linspace(beta_start, beta_end, K, dtype=torch.float64)  # (K,)


def make_betas(schedule: str, K: int) -> torch.Tensor:
    """The betas of a named schedule."""
    if schedule == "cosine":
        return cosine_betas(K)
    if schedule == "linear":
        return linear_betas(K)
    raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}")


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """abar_k = prod_{i<=k} (1 - beta_i), float64, (K,)."""
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


def q_sample(
    x0: torch.Tensor, k: torch.Tensor, abar: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """x_k = sqrt(abar_k) * x0 + sqrt(1 - abar_k) * eps, with one step k per row of x0 (B, N)."""
    a = abar.to(x0.device)[k].to(x0.dtype).unsqueeze(-1)  # (B, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps
