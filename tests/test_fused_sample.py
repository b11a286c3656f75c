"""`GalleryDenoiser.sample` (the whole DDIM loop, one compiled call per step) against
`ddim_sample` over the reference `Denoiser.forward`: the same x0_hat, eager and compiled, over
shared and per-query candidates, with all K steps or a strided subset, deterministic or with
per-step noise (eta > 0)."""

import warnings

import pytest
import torch

from diffatr.diffusion_head import Denoiser, GalleryDenoiser, cosine_betas, ddim_sample


def setup(seed: int):
    Ng, B, N, D, K = 20, 4, 6, 16, 10
    torch.manual_seed(seed)
    m = Denoiser(dim=D).double()
    for p in m.parameters():  # biases too, so every term of the algebra matters
        torch.nn.init.normal_(p, std=0.3)
    g = torch.Generator().manual_seed(seed + 1)
    gallery = torch.randn(Ng, D, generator=g, dtype=torch.float64)
    query = torch.randn(B, D, generator=g, dtype=torch.float64)
    idx = torch.stack([torch.randperm(Ng, generator=g)[:N] for _ in range(B)])
    return m, gallery, query, idx, g, K


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(("steps", "eta"), [(None, 0.0), (5, 0.0), (5, 0.8)])
def test_sample_equals_ddim_over_the_reference_denoiser(compiled, shared, steps, eta) -> None:
    m, gallery, query, idx, g, K = setup(7)
    idx = None if shared else idx
    n = len(gallery) if shared else idx.shape[1]
    x_T = torch.randn(len(query), n, generator=g, dtype=torch.float64)
    n_steps = K if steps is None else steps
    noise = torch.randn(n_steps, len(query), n, generator=g, dtype=torch.float64)
    betas = cosine_betas(K)
    gd = GalleryDenoiser(m, gallery, n_steps=K, compiled=compiled)
    cand = gallery if shared else gallery[idx]
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = gd.sample(query, idx, x_T, betas, steps, eta, noise)
        want = ddim_sample(lambda x, k: m(x, k, query, cand), x_T, betas, steps, eta, noise=noise)
    assert not [w for w in caught if "torch.compile failed" in str(w.message)]
    assert gd.compiled == compiled
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    if eta > 0:  # the noise is used: other noise, another result
        other = gd.sample(query, idx, x_T, betas, steps, eta, noise.flip(0))
        assert not torch.allclose(other, want)


def test_the_compiled_step_is_one_graph_for_every_step_and_block(monkeypatch) -> None:
    """Every step and block size runs the same graph: a recompile per step (e.g. a storage
    offset specialised at 0) would double the first use's compile time."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from diffatr.diffusion_head import fused

    m, gallery, query, idx, g, K = setup(3)
    torch._dynamo.reset()  # count this test's compilations only
    monkeypatch.setattr(fused, "_COMPILED", {})
    before = counters["stats"]["unique_graphs"]
    gd = GalleryDenoiser(m, gallery, n_steps=K, compiled=True)
    for rows in (slice(0, 4), slice(1, 4)):  # two block sizes, all K steps each
        # x_T a view, as DiffusionScores passes it (a row of the stacked noise)
        x_T = torch.randn(2, len(query[rows]), idx.shape[1], generator=g, dtype=torch.float64)[0]
        gd.sample(query[rows], idx[rows], x_T, cosine_betas(K))
    assert gd.compiled and counters["stats"]["unique_graphs"] - before == 1
