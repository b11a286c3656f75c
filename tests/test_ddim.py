"""DDIM sampling (method.md, Phase 2, "Sampling") step for step against diffusers' DDIMScheduler
and an element-by-element oracle, a hand-computed golden case, eta > 0 and seeding."""

import itertools
import math

import pytest
import torch
from diffusers import DDIMScheduler
from diffusion_oracle import (
    k_column,
    k_value,
    leading_timesteps,
    naive_ddim,
    toy_model_fn,
)

from diffatr.diffusion_head import cosine_betas, ddim_sample, ddim_timesteps


def recording(model_fn):
    """model_fn that remembers every (x_k, k) it is called with."""
    seen: list[tuple[torch.Tensor, int]] = []

    def f(x_k, k):
        seen.append((x_k.detach().clone(), k_value(k)))
        return model_fn(x_k, k)

    return f, seen


def diffusers_ddim(K, x_T, model_fn, steps=None, clip=True, eta=0.0, generator=None, f64=True):
    """method.md's reference: DDIMScheduler driven with step(..., use_clipped_model_output)."""
    sched = DDIMScheduler(
        num_train_timesteps=K,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="sample",
        clip_sample=clip,
        set_alpha_to_one=True,
        timestep_spacing="leading",
    )
    if f64:  # diffusers keeps alphas_cumprod in float32; the same schedule in float64
        sched.alphas_cumprod = torch.cumprod(1 - cosine_betas(K), 0)
        sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    sched.set_timesteps(steps or K)
    sample, seen, x0 = x_T, [], None
    for t in sched.timesteps.tolist():
        seen.append((sample.clone(), t))
        out = sched.step(
            model_fn(sample, t),
            t,
            sample,
            eta=eta,
            use_clipped_model_output=True,
            generator=generator,
        )
        sample, x0 = out.prev_sample, out.pred_original_sample
    return x0, seen


def x_T_for(B: int, N: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(B, N, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 1.5


CASES = [(10, None), (50, None), (50, 10), (50, 7), (10, 3)]


@pytest.mark.parametrize(("K", "steps"), CASES)
@pytest.mark.parametrize("clip", [True, False])
def test_matches_diffusers_step_for_step_float64(K: int, steps, clip: bool) -> None:
    x_T = x_T_for(4, 6)
    ours_fn, ours_seen = recording(toy_model_fn(K))
    got = ddim_sample(ours_fn, x_T, cosine_betas(K), steps=steps, clip=clip)
    want, ref_seen = diffusers_ddim(K, x_T, toy_model_fn(K), steps=steps, clip=clip)
    assert [k for _, k in ours_seen] == [t for _, t in ref_seen] == leading_timesteps(K, steps)
    for (x_ours, k), (x_ref, _) in zip(ours_seen, ref_seen, strict=True):
        torch.testing.assert_close(x_ours, x_ref, rtol=1e-9, atol=1e-9, msg=f"x_k at k={k}")
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    if clip:
        assert float(got.abs().max()) <= 1.0
    naive, naive_seen = naive_ddim(toy_model_fn(K), x_T, cosine_betas(K).tolist(), steps, clip)
    torch.testing.assert_close(got, naive, rtol=1e-9, atol=1e-9)
    for (x_ours, _), x_naive in zip(ours_seen, naive_seen, strict=True):
        torch.testing.assert_close(x_ours, x_naive, rtol=1e-9, atol=1e-9)


def test_clipping_matters_in_these_cases() -> None:
    """The toy model leaves [-1, 1], so clip=True and clip=False give different samples."""
    x_T = x_T_for(4, 6)
    a = ddim_sample(toy_model_fn(50), x_T, cosine_betas(50), steps=10, clip=True)
    b = ddim_sample(toy_model_fn(50), x_T, cosine_betas(50), steps=10, clip=False)
    assert float(b.abs().max()) > 1.0 and (a - b).abs().max() > 1e-2


@pytest.mark.parametrize(("K", "steps"), [(10, None), (50, None), (50, 7)])
def test_matches_stock_float32_diffusers(K: int, steps) -> None:
    x_T = x_T_for(4, 6, seed=1, dtype=torch.float32)
    ours_fn, ours_seen = recording(toy_model_fn(K))
    got = ddim_sample(ours_fn, x_T, cosine_betas(K), steps=steps)
    want, ref_seen = diffusers_ddim(K, x_T, toy_model_fn(K), steps=steps, f64=False)
    assert want.dtype == torch.float32
    for (x_ours, k), (x_ref, _) in zip(ours_seen, ref_seen, strict=True):
        torch.testing.assert_close(x_ours.double(), x_ref.double(), rtol=0, atol=1e-5, msg=str(k))
    torch.testing.assert_close(got.double(), want.double(), rtol=0, atol=1e-5)


def test_golden_two_strided_steps() -> None:
    """K = 4, steps = 2: k = 2 then k = 0, model x0_hat = 0.6 x_k + 0.1 k - 0.2, worked by hand:
    abar_2 = 0.14427210238573585, abar_0 = 0.8470121613269047 (cosine, K = 4);
    k=2: x0_hat = clamp(0.6 x_T) = [0.3, -1, 1, 0.06], eps_hat = (x_T - sqrt(abar_2) x0_hat)
    / sqrt(1 - abar_2), x = sqrt(abar_0) x0_hat + sqrt(1 - abar_0) eps_hat;
    k=0: the result is clamp(0.6 x - 0.2)."""
    x_T = torch.tensor([[0.5, -2.0, 3.0, 0.1]], dtype=torch.float64)

    def model(x, k):
        return 0.6 * x + 0.1 * k_column(k, x) - 0.2

    fn, seen = recording(model)
    got = ddim_sample(fn, x_T, cosine_betas(4), steps=2, clip=True)
    assert [k for _, k in seen] == [2, 0]
    x_mid = [0.43933157415751434, -1.6053802315254262, 2.028205184526562, 0.08786631483150287]
    torch.testing.assert_close(seen[1][0], torch.tensor([x_mid], dtype=torch.float64))
    want = [0.06359894449450859, -1.0, 1.0, -0.1472802111010983]
    torch.testing.assert_close(got, torch.tensor([want], dtype=torch.float64))
    abar = torch.cumprod(1 - cosine_betas(4), 0)
    assert float(abar[2]) == pytest.approx(0.14427210238573585, rel=1e-12)
    assert float(abar[0]) == pytest.approx(0.8470121613269047, rel=1e-12)

    fn, seen = recording(model)
    got = ddim_sample(fn, x_T, cosine_betas(4), steps=2, clip=False)
    x_mid = [0.43933157415751434, -1.7573262966300573, 2.6359894449450856, 0.08786631483150287]
    torch.testing.assert_close(seen[1][0], torch.tensor([x_mid], dtype=torch.float64))
    want = [0.06359894449450859, -1.2543957779780344, 1.3815936669670514, -0.1472802111010983]
    torch.testing.assert_close(got, torch.tensor([want], dtype=torch.float64))


def test_steps_outside_1_to_K_are_refused() -> None:
    for steps in (0, 11):
        with pytest.raises(ValueError):
            ddim_sample(toy_model_fn(10), x_T_for(2, 3), cosine_betas(10), steps=steps)


def test_timesteps_are_diffusers_leading_for_every_steps() -> None:
    for K in (10, 50, 100):
        for steps in range(1, K + 1):
            sched = DDIMScheduler(num_train_timesteps=K, timestep_spacing="leading")
            sched.set_timesteps(steps)
            assert ddim_timesteps(K, steps) == sched.timesteps.tolist(), (K, steps)
            assert ddim_timesteps(K, steps) == leading_timesteps(K, steps)
        assert ddim_timesteps(K, None) == list(range(K - 1, -1, -1))


def test_eta_zero_ignores_the_generator() -> None:
    x_T = x_T_for(3, 5)
    a = ddim_sample(
        toy_model_fn(10), x_T, cosine_betas(10), generator=torch.Generator().manual_seed(1)
    )
    b = ddim_sample(
        toy_model_fn(10), x_T, cosine_betas(10), generator=torch.Generator().manual_seed(2)
    )
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_eta_positive_same_seed_same_sample_other_seed_other_sample() -> None:
    x_T, betas = x_T_for(3, 5), cosine_betas(10)

    def run(seed: int) -> torch.Tensor:
        fn, seen = recording(toy_model_fn(10))
        gen = torch.Generator().manual_seed(seed)
        ddim_sample(fn, x_T, betas, eta=0.8, generator=gen)
        return torch.stack([x for x, _ in seen])

    torch.testing.assert_close(run(5), run(5), rtol=0, atol=0)
    assert (run(5) - run(6)).abs().max() > 1e-3


def test_eta_positive_noise_is_standard_normal_with_the_ddim_variance() -> None:
    """Recover the noise z each step added, x_prev = mean + sigma z, with the DDIM formulas of
    Song et al. (eq. 12, 16) written out; z must look i.i.d. N(0, 1) and independent of eps_hat."""
    K, steps, eta = 50, 10, 0.7
    x_T = x_T_for(48, 48, seed=3)
    model = toy_model_fn(K)
    fn, seen = recording(model)
    ddim_sample(
        fn, x_T, cosine_betas(K), steps=steps, eta=eta, generator=torch.Generator().manual_seed(0)
    )
    abar = torch.cumprod(1 - cosine_betas(K), 0).tolist()
    zs, eps_all = [], []
    for (x, k), (x_next, k_next) in itertools.pairwise(seen):
        a, a_prev = abar[k], abar[k_next]
        x0 = model(x, k).clamp(-1, 1)
        eps_hat = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        mean = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps_hat
        zs.append((x_next - mean) / sigma)
        eps_all.append(eps_hat)
    z, e = torch.cat(zs).flatten(), torch.cat(eps_all).flatten()  # 9 * 2304 values
    assert abs(float(z.mean())) < 0.05
    assert abs(float(z.std()) - 1) < 0.05
    assert abs(float(torch.corrcoef(torch.stack([z, e]))[0, 1])) < 0.05


def test_eta_positive_matches_diffusers_given_the_same_generator() -> None:
    """Bonus check: drawing the step noise as diffusers does (one randn of x's shape per step
    from the generator) gives diffusers' exact sample."""
    K, steps, eta = 50, 10, 0.5
    x_T = x_T_for(4, 6, seed=4)
    fn, seen = recording(toy_model_fn(K))
    ddim_sample(
        fn, x_T, cosine_betas(K), steps=steps, eta=eta, generator=torch.Generator().manual_seed(9)
    )
    _, ref_seen = diffusers_ddim(
        K, x_T, toy_model_fn(K), steps=steps, eta=eta, generator=torch.Generator().manual_seed(9)
    )
    for (x_ours, k), (x_ref, _) in zip(seen, ref_seen, strict=True):
        torch.testing.assert_close(x_ours, x_ref, rtol=1e-9, atol=1e-9, msg=f"x_k at k={k}")


def test_eta_positive_with_given_noise_matches_diffusers_variance_noise() -> None:
    """`noise` (steps, B, N) is diffusers' variance_noise, step by step."""
    K, steps, eta = 50, 7, 1.0
    x_T = x_T_for(4, 6, seed=5)
    noise = torch.randn(steps, 4, 6, generator=torch.Generator().manual_seed(2), dtype=x_T.dtype)
    fn, seen = recording(toy_model_fn(K))
    got = ddim_sample(fn, x_T, cosine_betas(K), steps=steps, eta=eta, noise=noise)
    sched = DDIMScheduler(
        num_train_timesteps=K,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="sample",
        clip_sample=True,
        set_alpha_to_one=True,
        timestep_spacing="leading",
    )
    sched.alphas_cumprod = torch.cumprod(1 - cosine_betas(K), 0)
    sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    sched.set_timesteps(steps)
    sample = x_T
    for n, t in enumerate(sched.timesteps.tolist()):
        torch.testing.assert_close(seen[n][0], sample, rtol=1e-9, atol=1e-9, msg=f"k={t}")
        out = sched.step(
            toy_model_fn(K)(sample, t),
            t,
            sample,
            eta=eta,
            use_clipped_model_output=True,
            variance_noise=noise[n],
        )
        sample = out.prev_sample
    torch.testing.assert_close(got, out.pred_original_sample, rtol=1e-9, atol=1e-9)
