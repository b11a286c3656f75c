"""The factorised, fused inference path (diffatr/diffusion_head/fused.py) against the eager
Denoiser and the loop oracle of tests/diffusion_oracle.py: fused == eager == naive, on random
weights, shared and per-query candidates, the compiled kernel included. (Training's version of
the algebra is tested in test_stacked.py.)"""

import warnings

import pytest
import torch
from diffusion_oracle import naive_denoiser, random_model

from diffatr.diffusion_head import Denoiser, GalleryDenoiser, cosine_betas, ddim_sample
from diffatr.diffusion_head import fused as fused_mod


def naive_pair_logits(HE: torch.Tensor, GC: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """w2 . relu(HE_b + GC_j), one pair at a time."""
    B, N = HE.shape[0], GC.shape[-2]
    out = torch.zeros(B, N, dtype=torch.float64)
    for b in range(B):
        for j in range(N):
            g = GC[j] if GC.dim() == 2 else GC[b, j]
            out[b, j] = sum(
                float(w2[c]) * max(float(HE[b, c]) + float(g[c]), 0.0) for c in range(len(w2))
            )
    return out


def no_compile_fallback(fn):
    """Run fn and fail if the compiled path fell back to eager (so the kernel really ran)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    fallbacks = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    assert not fallbacks, fallbacks
    return out


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pair_logits_eager_blocks_and_compiled_match_the_loop(shared, dtype, monkeypatch) -> None:
    g = torch.Generator().manual_seed(0)
    B, N, W = 5, 7, 12
    HE = torch.randn(B, W, generator=g, dtype=dtype)
    GC = torch.randn(*((N, W) if shared else (B, N, W)), generator=g, dtype=dtype)
    w2 = torch.randn(W, generator=g, dtype=dtype)
    want = naive_pair_logits(HE, GC, w2)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    eager = fused_mod._eager_blocks(HE, GC, w2, shared)
    torch.testing.assert_close(eager.double(), want, rtol=tol, atol=tol)
    monkeypatch.setattr(fused_mod, "EAGER_BLOCK_ELEMENTS", 2 * N * W)  # blocks of 2 rows
    blocks = fused_mod._eager_blocks(HE, GC, w2, shared)
    torch.testing.assert_close(blocks.double(), want, rtol=tol, atol=tol)
    fn = fused_mod._pair_logits_shared if shared else fused_mod._pair_logits_gathered
    with torch.no_grad():
        fast = fused_mod._compiled(fn.__name__, fn)(HE, GC, w2)
    assert fast.dtype == dtype and fast.shape == (B, N)
    torch.testing.assert_close(fast.double(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("use_idx", [False, True])
def test_gallery_model_fn_equals_naive_on_the_gathered_candidates(compiled, use_idx) -> None:
    Ng, B, N, D, K = 12, 3, 5, 16, 10
    m = random_model(D, seed=41)
    g = torch.Generator().manual_seed(42)
    gallery = torch.randn(Ng, D, generator=g, dtype=torch.float64)
    query = torch.randn(B, D, generator=g, dtype=torch.float64)
    idx = torch.stack([torch.randperm(Ng, generator=g)[:N] for _ in range(B)]) if use_idx else None
    n = N if use_idx else Ng
    x_k = torch.randn(B, n, generator=g, dtype=torch.float64)
    gd = GalleryDenoiser(m, gallery, n_steps=K, compiled=compiled)
    fn = gd.model_fn(gd.query_constants(query), idx)
    for kv in (0, 4, K - 1):
        k = torch.full((B,), kv)
        cand = gallery[idx] if use_idx else gallery
        with torch.no_grad():
            got = no_compile_fallback(lambda k=k: fn(x_k, k))
            eager = m(x_k, k, query, cand)
        want = naive_denoiser(m.state_dict(), x_k, k, query, cand)
        assert got.shape == (B, n)
        torch.testing.assert_close(got, eager, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_ddim_over_the_gallery_equals_ddim_over_the_eager_model() -> None:
    Ng, B, N, D, K = 20, 4, 6, 16, 10
    torch.manual_seed(0)
    m = Denoiser(dim=D).double()
    g = torch.Generator().manual_seed(51)
    gallery = torch.randn(Ng, D, generator=g, dtype=torch.float64)
    query = torch.randn(B, D, generator=g, dtype=torch.float64)
    idx = torch.stack([torch.randperm(Ng, generator=g)[:N] for _ in range(B)])
    x_T = torch.randn(B, N, generator=g, dtype=torch.float64)
    gd = GalleryDenoiser(m, gallery, n_steps=K, compiled=False)
    with torch.no_grad():
        fast = ddim_sample(gd.model_fn(gd.query_constants(query), idx), x_T, cosine_betas(K))
        ref = ddim_sample(lambda x, k: m(x, k, query, gallery[idx]), x_T, cosine_betas(K))
    torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-9)
