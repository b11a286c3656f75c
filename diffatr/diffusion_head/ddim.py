"""DDIM sampling (Song et al. 2021, eq. 12) of the diffusion head, as method.md "Sampling" states.

Reads nothing, writes nothing: a function over any callable `model_fn(x_k, k) -> x0_hat`.
Agrees step for step with diffusers' DDIMScheduler(beta_schedule="squaredcos_cap_v2",
prediction_type="sample", clip_sample=True, set_alpha_to_one=True, timestep_spacing="leading")
driven with step(..., use_clipped_model_output=True) (tests/test_ddim.py). Notation:

    abar_k        alpha-bar at step k; abar_{-1} = 1 (set_alpha_to_one)
    x0_hat        the model's estimate of x0, clamped to [-1, 1] when clip=True
    eps_hat       (x_k - sqrt(abar_k) * x0_hat) / sqrt(1 - abar_k), from the clamped x0_hat
    sigma_k       eta * sqrt((1 - abar_prev) / (1 - abar_k)) * sqrt(1 - abar_k / abar_prev)
"""

from collections.abc import Callable
from typing import NamedTuple

import torch

from .schedule import alphas_cumprod


def ddim_timesteps(K: int, steps: int | None = None) -> list[int]:
    """The steps visited, K-1 first: all K, or the strided "leading" subsequence of `steps`."""
    if steps is None or steps == K:
        return list(range(K - 1, -1, -1))
    if not 1 <= steps <= K:
        raise ValueError(f"sampling steps must be between 1 and K={K}, got {steps}")
    ratio = K // steps
    return [i * ratio for i in range(steps - 1, -1, -1)]


def ddim_sample(
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_T: torch.Tensor,
    betas: torch.Tensor,
    steps: int | None = None,
    eta: float = 0.0,
    clip: bool = True,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run DDIM from x_T (B, N) down to step 0; return the final x0_hat (B, N).

    With eta > 0 each step adds sigma_k * z; z comes from `noise` (steps, B, N) when given
    (per-row reproducible noise), else from `generator`.
    """
    x_k = x_T
    x0_hat = x_T
    B = x_T.shape[0]
    for n, (k, c) in enumerate(ddim_coefficients(betas, steps, eta)):
        step = torch.full((B,), k, dtype=torch.long, device=x_T.device)
        x0_hat = model_fn(x_k, step)
        if clip:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
        eps_hat = (x_k - c.sqrt_a * x0_hat) / c.sqrt_1ma
        x_k = c.sqrt_a_prev * x0_hat + c.dir * eps_hat
        if c.sigma > 0:
            z = noise[n] if noise is not None else _randn_like(x_k, generator)
            x_k = x_k + c.sigma * z
    return x0_hat


class StepCoefficients(NamedTuple):
    """One DDIM step's scalars, in double precision (the module docstring's notation)."""

    sqrt_a: float  # sqrt(abar_k)
    sqrt_1ma: float  # sqrt(1 - abar_k)
    sqrt_a_prev: float  # sqrt(abar_prev)
    dir: float  # sqrt(max(1 - abar_prev - sigma_k^2, 0)), the weight of eps_hat
    sigma: float  # sigma_k, the weight of fresh noise


def ddim_coefficients(
    betas: torch.Tensor, steps: int | None = None, eta: float = 0.0
) -> list[tuple[int, StepCoefficients]]:
    """(k, its coefficients) for every step visited, K-1 first: the one place both samplers
    (`ddim_sample` and the fused loop of fused.py) take their arithmetic from."""
    K = len(betas)
    abar = alphas_cumprod(betas)
    timesteps = ddim_timesteps(K, steps)
    stride = K // len(timesteps)  # 1 when all K steps run
    out = []
    for k in timesteps:
        a_k = float(abar[k])
        a_prev = float(abar[k - stride]) if k - stride >= 0 else 1.0
        sigma = eta * ((1 - a_prev) / (1 - a_k)) ** 0.5 * (1 - a_k / a_prev) ** 0.5
        direction = max(1.0 - a_prev - sigma**2, 0.0) ** 0.5
        out.append(
            (k, StepCoefficients(a_k**0.5, (1.0 - a_k) ** 0.5, a_prev**0.5, direction, sigma))
        )
    return out


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
