"""The training fast path (diffatr/diffusion_head/stacked.py): both directions' loss through the
stacked, factorised computation against the reference Denoiser and the loop oracle of
tests/diffusion_oracle.py, its gradients against autograd through the reference (also with more
candidates than queries and with several heads stacked), the compiled loss and the compiled
trainer end to end against the reference ones, and the parameter views that keep the modules
current."""

import copy
import math
import warnings
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from diffusion_oracle import naive_denoiser, random_model

from diffatr.diffusion_head import HeadConfig
from diffatr.diffusion_head.checkpoint import Head, load_head, save_head
from diffatr.diffusion_head.schedule import alphas_cumprod, cosine_betas, q_sample
from diffatr.diffusion_head.stacked import CompiledLoss, StackedPair, group_losses, pair_loss
from diffatr.diffusion_head.trainer import HeadTrainer

pytestmark = pytest.mark.usefixtures("one_thread")
K = 20


def setup(B: int, D: int, seed: int, dtype=torch.float64):
    nets = {"t2a": random_model(D, seed).to(dtype), "a2t": random_model(D, seed + 1).to(dtype)}
    g = torch.Generator().manual_seed(seed + 2)
    text = torch.randn(B, D, generator=g, dtype=dtype)
    audio = torch.randn(B, D, generator=g, dtype=dtype)
    k = torch.randint(0, K, (2, B), generator=g)
    eps = torch.randn(2, B, B, generator=g, dtype=dtype)
    abar = alphas_cumprod(cosine_betas(K))
    return nets, text, audio, k, eps, abar


def naive_ce(x0_hat: torch.Tensor, scale: float) -> float:
    """Mean over rows of -log softmax(scale * x0_hat)[row, row], in Python floats."""
    total = 0.0
    for i, row in enumerate(x0_hat.tolist()):
        z = [scale * v for v in row]
        m = max(z)
        total += -(z[i] - m - math.log(sum(math.exp(v - m) for v in z)))
    return total / len(x0_hat)


def reference_loss(nets, text, audio, k, eps, abar, scale):
    """L_t2a + L_a2t through Denoiser.forward, one direction at a time."""
    B = len(text)
    total = 0
    for i, (d, query, cand) in enumerate((("t2a", text, audio), ("a2t", audio, text))):
        x_k = q_sample(torch.eye(B, dtype=text.dtype), k[i], abar, eps[i])
        x0_hat = nets[d](x_k, k[i], query, cand)
        total = total + F.cross_entropy(scale * x0_hat, torch.arange(B))
    return total


def stacked_loss(pair, text, audio, k, eps, abar, scale, fn=pair_loss):
    query, cand = torch.stack([text, audio]), torch.stack([audio, text])
    return fn(pair.params, pair.step_table, query, cand, k, eps, abar, scale)


@pytest.mark.parametrize(("B", "D"), [(2, 4), (3, 8), (5, 16)])
def test_pair_loss_equals_the_loop_oracle_and_the_reference_float64(B, D) -> None:
    nets, text, audio, k, eps, abar = setup(B, D, seed=B + D)
    scale = 3.0  # weights of std 0.4 give large x0_hat: a moderate scale keeps CE informative
    want = 0.0
    for i, (d, query, cand) in enumerate((("t2a", text, audio), ("a2t", audio, text))):
        x_k = q_sample(torch.eye(B, dtype=torch.float64), k[i], abar, eps[i])
        want += naive_ce(naive_denoiser(nets[d].state_dict(), x_k, k[i], query, cand), scale)
    ref = reference_loss(nets, text, audio, k, eps, abar, scale)
    got = stacked_loss(StackedPair(copy.deepcopy(nets)), text, audio, k, eps, abar, scale)
    assert got.dtype == torch.float64 and got.dim() == 0
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    assert got.item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize(("B", "D"), [(3, 8), (6, 16)])
def test_stacked_gradients_equal_autograd_through_the_reference(B, D) -> None:
    nets, text, audio, k, eps, abar = setup(B, D, seed=7 * B + D)
    for net in nets.values():
        net.decoder[2].bias.requires_grad_(False)  # frozen in training (train.init_nets)
    reference_loss(nets, text, audio, k, eps, abar, 3.0).backward()
    pair = StackedPair(copy.deepcopy(nets))
    stacked_loss(pair, text, audio, k, eps, abar, 3.0).backward()
    assert pair.names == [n for n, p in nets["t2a"].named_parameters() if p.requires_grad]
    for name, leaf in zip(pair.names, pair.leaves, strict=True):
        for i, d in enumerate(("t2a", "a2t")):
            want = dict(nets[d].named_parameters())[name].grad
            torch.testing.assert_close(leaf.grad[i], want, rtol=1e-9, atol=1e-11, msg=name)
            assert leaf.grad.stride() == leaf.stride(), f"{name}: grad in another layout"


def test_loss_with_more_candidates_than_queries_equals_the_oracle() -> None:
    """N != B: query i's positive is candidate i of N; x0 = I (B x N). Slicing the stacked
    [VC; W_V pj] at B instead of N would mix the step-embedding rows into the candidates."""
    B, N, D = 3, 5, 8
    nets, text, _, k, _, abar = setup(B, D, seed=11)
    g = torch.Generator().manual_seed(12)
    cands = torch.randn(2, N, D, generator=g, dtype=torch.float64)  # [audio, text] galleries
    eps = torch.randn(2, B, N, generator=g, dtype=torch.float64)
    query = torch.stack([text, cands[1, :B]])  # a2t's queries are audio: reuse any (B, D) rows
    want = []
    for i, d in enumerate(("t2a", "a2t")):
        x_k = q_sample(torch.eye(B, N, dtype=torch.float64), k[i], abar, eps[i])
        x0_hat = naive_denoiser(nets[d].state_dict(), x_k, k[i], query[i], cands[i])
        want.append(naive_ce(x0_hat, 3.0))
    pair = StackedPair(copy.deepcopy(nets))
    got = group_losses(pair.params, pair.step_table, query, cands, k, eps, abar, 3.0)
    assert got.tolist() == pytest.approx(want, rel=1e-9)


def test_several_heads_stacked_give_each_head_its_own_loss_and_gradients() -> None:
    """G = 2H groups (head h's t2a at 2h, a2t at 2h + 1) against each head's reference loss."""
    B, D, H = 4, 8, 3
    heads = [setup(B, D, seed=20 + 5 * h) for h in range(H)]
    for nets, *_ in heads:
        for net in nets.values():
            net.decoder[2].bias.requires_grad_(False)
    pair = StackedPair([copy.deepcopy(n[d]) for n, *_ in heads for d in ("t2a", "a2t")])
    query = torch.stack([x for _, t, a, *_ in heads for x in (t, a)])
    cand = torch.stack([x for _, t, a, *_ in heads for x in (a, t)])
    k = torch.cat([h[3] for h in heads])
    eps = torch.cat([h[4] for h in heads])
    abar = heads[0][5]
    losses = group_losses(pair.params, pair.step_table, query, cand, k, eps, abar, 3.0)
    losses.sum().backward()
    for h, (nets, text, audio, kh, epsh, _) in enumerate(heads):
        ref = reference_loss(nets, text, audio, kh, epsh, abar, 3.0)
        torch.testing.assert_close(losses[2 * h] + losses[2 * h + 1], ref, rtol=1e-10, atol=0)
        ref.backward()
        for name, leaf in zip(pair.names, pair.leaves, strict=True):
            for i, d in enumerate(("t2a", "a2t")):
                want = dict(nets[d].named_parameters())[name].grad
                torch.testing.assert_close(leaf.grad[2 * h + i], want, rtol=1e-9, atol=1e-11)


def small_float32(nets):
    nets = {d: copy.deepcopy(n).float() for d, n in nets.items()}
    for net in nets.values():
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(0.25)  # float32-friendly magnitudes
    return nets


@pytest.mark.parametrize("path", ["native", "compiled"])
def test_compiled_loss_and_gradients_equal_the_reference_float32(path, request) -> None:
    """The fast forward and backward (written out with the C kernel, or torch.compile'd)
    against autograd through Denoiser.forward in float64 (the same float32 weights), not
    against the eager version of the same function."""
    if path == "compiled":
        request.getfixturevalue("torch_loss")
    B, D = 6, 16
    nets64, text, audio, k, eps, abar = setup(B, D, seed=3)
    nets = small_float32(nets64)
    for net in nets.values():
        net.decoder[2].bias.requires_grad_(False)
    ref_nets = {d: copy.deepcopy(n).double() for d, n in nets.items()}
    ref = reference_loss(ref_nets, text, audio, k, eps, abar, 100.0)
    ref.backward()
    pair = StackedPair(copy.deepcopy(nets))
    fn = CompiledLoss(batch_size=B)
    f32 = (text.float(), audio.float(), k, eps.float(), abar)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        query, cand = torch.stack(f32[:2]), torch.stack(f32[1::-1])
        losses = fn.losses_and_grads(pair.params, pair.step_table, query, cand, *f32[2:], 100.0)
    assert not [w for w in caught if "torch.compile failed" in str(w.message)]
    torch.testing.assert_close(losses.sum().double(), ref, rtol=1e-4, atol=1e-4)
    for name, leaf in zip(pair.names, pair.leaves, strict=True):
        for i, d in enumerate(("t2a", "a2t")):
            want = dict(ref_nets[d].named_parameters())[name].grad.float()
            torch.testing.assert_close(leaf.grad[i], want, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("path", ["native", "compiled"])
def test_compiled_trainer_equals_the_naive_reference_trainer(path, request) -> None:
    """End to end, fast: stacked loss + fused clip/AdamW/EMA (written out and in C, or
    torch.compile'd) against the reference trainer (Denoiser.forward, torch.optim.AdamW,
    clip_grad_norm_, an EMA loop)."""
    if path == "compiled":
        request.getfixturevalue("torch_loss")
        request.getfixturevalue("torch_optimiser")
    B, D, steps = 6, 16, 4
    # a moderate logit scale: saturated softmaxes give tiny gradients whose rounding Adam
    # would turn into full-size steps (1e-3 apart with logit_scale 100, either path)
    cfg = HeadConfig(K=K, batch_size=B, lr=1e-3, ema=0.5, grad_clip=0.5, logit_scale=5.0)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)) for _ in range(steps)]
    trained = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for fused in (True, False):
            trainer = HeadTrainer(D, replace(cfg, fused=fused), total_steps=steps)
            noise = torch.Generator().manual_seed(1)
            losses = [trainer.step(t, a, noise) for t, a in data]
            trained[fused] = (losses, trainer.nets, trainer.ema)
    assert not [w for w in caught if "torch.compile failed" in str(w.message)]
    (fast_loss, fast, fast_ema), (ref_loss, ref, ref_ema) = trained[True], trained[False]
    assert fast_loss == pytest.approx(ref_loss, rel=1e-5)
    for d in ("t2a", "a2t"):
        for (name, p), q in zip(fast[d].named_parameters(), ref[d].parameters(), strict=True):
            if name == "decoder.2.bias":
                continue  # frozen in both
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)
        for p, q in zip(fast_ema[d].parameters(), ref_ema[d].parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
        moved = (fast[d].q_proj.weight - fast_ema[d].q_proj.weight).abs().max()
        assert moved > 1e-4  # the EMA lags the weights: it is compared, not a copy


def test_compiled_loss_runs_other_batch_sizes_eagerly() -> None:
    nets, text, audio, k, eps, abar = setup(3, 8, seed=5, dtype=torch.float32)
    fn = CompiledLoss(batch_size=32)  # never this size here: nothing is compiled
    fn._fn = None  # would raise if called
    pair = StackedPair(copy.deepcopy(nets))
    got = stacked_loss(pair, text, audio, k, eps, abar, 10.0, fn)
    torch.testing.assert_close(got, stacked_loss(pair, text, audio, k, eps, abar, 10.0))


def test_module_parameters_are_views_of_the_stacked_rows(tmp_path) -> None:
    nets = {"t2a": random_model(8, 1).float(), "a2t": random_model(8, 2).float()}
    before = {d: copy.deepcopy(n.state_dict()) for d, n in nets.items()}
    pair = StackedPair(nets)
    for name, stacked in pair.params.items():  # same values after stacking
        for i, d in enumerate(("t2a", "a2t")):
            torch.testing.assert_close(stacked[i], before[d][name], rtol=0, atol=0)
    with torch.no_grad():
        pair.params["q_proj.weight"][1].add_(1.0)  # an optimiser step on a2t's row
    assert torch.equal(nets["a2t"].q_proj.weight, before["a2t"]["q_proj.weight"] + 1)
    assert torch.equal(nets["t2a"].q_proj.weight, before["t2a"]["q_proj.weight"])
    # a checkpoint holds each direction's own tensors, not the stacked storage twice over
    out = tmp_path / "h.pt"
    save_head(out, Head(HeadConfig(K=K), nets["t2a"], nets["a2t"], {}))
    n_values = sum(p.numel() for net in nets.values() for p in net.parameters())
    assert out.stat().st_size < 4 * n_values * 1.2 + 20_000
    assert torch.equal(load_head(out).a2t.q_proj.weight, nets["a2t"].q_proj.weight)
