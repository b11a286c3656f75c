"""The noise schedules, q_sample and the training-loss identity (method.md, Phase 2, "Forward
process" and "Training loss") against loop oracles, diffusers and golden numbers."""

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from diffusion_oracle import (
    naive_alphabar,
    naive_cosine_betas,
    naive_denoiser,
    naive_linear_betas,
    naive_q_sample,
    random_model,
)

from diffatr.diffusion_head import (
    alphas_cumprod,
    cosine_betas,
    linear_betas,
    make_betas,
    q_sample,
)
from diffatr.diffusion_head.config import HeadConfig
from diffatr.diffusion_head.trainer import direction_loss


@pytest.mark.parametrize("K", [10, 50, 100, 200])
def test_cosine_betas_match_the_formula_in_a_loop(K: int) -> None:
    betas = cosine_betas(K)
    assert isinstance(betas, torch.Tensor)
    assert betas.dtype == torch.float64 and betas.shape == (K,)
    torch.testing.assert_close(betas, torch.tensor(naive_cosine_betas(K), dtype=torch.float64))


@pytest.mark.parametrize("K", [10, 50, 100, 200])
def test_cosine_betas_match_diffusers_squaredcos_cap_v2(K: int) -> None:
    ref = DDIMScheduler(num_train_timesteps=K, beta_schedule="squaredcos_cap_v2").betas
    assert ref.dtype == torch.float32  # hence the float32-sized tolerance
    torch.testing.assert_close(cosine_betas(K), ref.double(), atol=1e-6, rtol=0)


def test_cosine_betas_golden_numbers_K50() -> None:
    betas = cosine_betas(50)
    abar = torch.cumprod(1 - betas, dim=0)
    golden_betas = {
        0: 0.0017475135338653747,
        1: 0.003688954726538851,
        24: 0.05935366429225686,
        48: 0.7497570035157484,
        49: 0.999,
    }
    for i, v in golden_betas.items():
        assert float(betas[i]) == pytest.approx(v, rel=1e-12, abs=1e-15), i
    golden_abar = {
        0: 0.9982524864661346,
        9: 0.8987059205995087,
        24: 0.4938435904406377,
        49: 9.71193029871257e-07,
    }
    for k, v in golden_abar.items():
        assert float(abar[k]) == pytest.approx(v, rel=1e-10), k


@pytest.mark.parametrize("K", [10, 50, 100, 200])
def test_cosine_betas_clip_only_the_last_at_0_999(K: int) -> None:
    betas = cosine_betas(K)
    assert float(betas[-1]) == 0.999
    assert bool((betas[:-1] < 0.999).all()) and bool((betas > 0).all())
    assert bool((betas[1:] > betas[:-1]).all())  # increasing: more noise at every step


def test_alphabar_is_the_cumulative_product() -> None:
    want = torch.tensor(naive_alphabar(naive_cosine_betas(50)), dtype=torch.float64)
    torch.testing.assert_close(alphas_cumprod(cosine_betas(50)), want)
    got = alphas_cumprod(cosine_betas(50).float())
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_make_betas_names_the_schedules() -> None:
    torch.testing.assert_close(make_betas("cosine", 20), cosine_betas(20))
    torch.testing.assert_close(make_betas("linear", 20), linear_betas(20))
    with pytest.raises(ValueError, match="sigmoid"):
        make_betas("sigmoid", 20)
    with pytest.raises(ValueError):
        cosine_betas(0)


@pytest.mark.parametrize("K", [10, 50, 1000])
def test_linear_betas_match_diffusers_linear(K: int) -> None:
    betas = linear_betas(K)
    assert betas.dtype == torch.float64 and betas.shape == (K,)
    torch.testing.assert_close(betas, torch.tensor(naive_linear_betas(K), dtype=torch.float64))
    torch.testing.assert_close(betas, torch.linspace(1e-4, 0.02, K, dtype=torch.float64))
    ref = DDIMScheduler(num_train_timesteps=K, beta_schedule="linear").betas
    torch.testing.assert_close(betas, ref.double(), atol=1e-8, rtol=0)


def test_q_sample_matches_the_loop_with_a_k_per_row() -> None:
    g = torch.Generator().manual_seed(0)
    K, B, N = 50, 6, 7
    abar = torch.cumprod(1 - cosine_betas(K), 0)
    x0 = F.one_hot(torch.randint(0, N, (B,), generator=g), N).double()
    eps = torch.randn(B, N, generator=g, dtype=torch.float64)
    k = torch.tensor([0, 49, 3, 3, 25, 10])
    got = q_sample(x0, k, abar, eps)
    assert got.shape == (B, N)
    torch.testing.assert_close(
        got, torch.tensor(naive_q_sample(x0, k, abar, eps), dtype=torch.float64)
    )
    # eps = 0 leaves the scaled signal only; k = K-1 is almost pure noise
    torch.testing.assert_close(
        q_sample(x0, k, abar, torch.zeros_like(eps)), abar[k, None].sqrt() * x0
    )
    last = q_sample(x0, torch.full((B,), K - 1), abar, eps)
    assert (last - eps).abs().max() < 2e-3


def naive_kl_onehot(scores: torch.Tensor, pos: torch.Tensor) -> float:
    """mean_b KL(onehot(pos_b) || softmax(scores_b)) with 0 log 0 = 0, written out."""
    total = 0.0
    for b, row in enumerate(scores.tolist()):
        m = max(row)
        logz = m + math.log(sum(math.exp(v - m) for v in row))
        for j, v in enumerate(row):
            p = 1.0 if j == int(pos[b]) else 0.0
            if p > 0:
                total += p * (math.log(p) - (v - logz))
    return total / len(scores)


def test_direction_loss_is_the_kl_from_the_onehot_over_the_naive_denoiser() -> None:
    """trainer.direction_loss (the naive path's L_G) against method.md written out: x_k by
    naive_q_sample from x0 = I_B, x0_hat by naive_denoiser, then
    mean_b KL(onehot(b) || softmax(logit_scale * x0_hat_b))."""
    B, D, K = 4, 8, 50
    m = random_model(D, seed=3)
    g = torch.Generator().manual_seed(1)
    query = torch.randn(B, D, generator=g, dtype=torch.float64)
    cand = torch.randn(B, D, generator=g, dtype=torch.float64)
    k = torch.randint(0, K, (B,), generator=g)
    eps = torch.randn(B, B, generator=g, dtype=torch.float64)
    abar = alphas_cumprod(cosine_betas(K)).double()
    for scale in (100.0, 7.0):
        got = direction_loss(m, query, cand, k, eps, abar, HeadConfig(K=K, logit_scale=scale))
        x_k = torch.tensor(naive_q_sample(torch.eye(B), k, abar, eps), dtype=torch.float64)
        x0_hat = naive_denoiser(m.state_dict(), x_k, k, query, cand)
        want = naive_kl_onehot(scale * x0_hat, torch.arange(B))
        assert got.item() == pytest.approx(want, rel=1e-6)  # x0 = I_B is float32 there
