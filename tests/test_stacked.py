"""The training fast path (diffatr/diffusion_head/stacked.py): both directions' loss through the
stacked, factorised computation against the reference Denoiser and the loop oracle of
tests/diffusion_oracle.py, its gradients against autograd through the reference, the compiled
version against the eager one, and the parameter views that keep the modules current."""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from diffusion_oracle import naive_denoiser, random_model

from diffatr.diffusion_head import HeadConfig
from diffatr.diffusion_head.checkpoint import Head, load_head, save_head
from diffatr.diffusion_head.schedule import alphas_cumprod, cosine_betas, q_sample
from diffatr.diffusion_head.stacked import CompiledLoss, StackedPair, pair_loss

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


def test_compiled_loss_and_gradients_equal_eager_float32() -> None:
    B, D = 6, 16
    nets, text, audio, k, eps, abar = setup(B, D, seed=3, dtype=torch.float32)
    for net in nets.values():
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(0.25)  # float32-friendly magnitudes
    results = []
    for fn in (pair_loss, CompiledLoss(batch_size=B)):
        pair = StackedPair(copy.deepcopy(nets))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss = stacked_loss(pair, text, audio, k, eps, abar, 100.0, fn)
            loss.backward()
        assert not [w for w in caught if "torch.compile failed" in str(w.message)]
        results.append((loss.detach(), [leaf.grad for leaf in pair.leaves]))
    (eager, eager_grads), (fast, fast_grads) = results
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-4)
    names = StackedPair(copy.deepcopy(nets)).names
    for name, a, b in zip(names, fast_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)


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
