"""The training loss written out (diffatr/diffusion_head/native_loss.py, its pair logits in
pair_logits.c) against autograd: the kernel against its torch twin (stacked._PairLogits), the
losses and every gradient against autograd through `group_losses` in float64, and the
properties the trainer relies on: the same bytes on any thread count, gradients added to those
already there, no torch.compile (no dynamo import) on the CPU."""

import copy
import os
import subprocess
import sys

import pytest
import torch

from diffatr.diffusion_head import native_loss
from diffatr.diffusion_head.checkpoint import new_denoiser
from diffatr.diffusion_head.schedule import alphas_cumprod, cosine_betas
from diffatr.diffusion_head.stacked import CompiledLoss, StackedPair, _PairLogits, group_losses

pytestmark = pytest.mark.skipif(native_loss.library() is None, reason="no C compiler")
K = 10


def inputs(G: int, B: int, N: int, D: int, seed: int = 0):
    """G groups' small float32 denoisers (weights scaled up from the 0.02 init so every term
    matters) and one batch: query (G, B, D), candidates (G, N, D), k, eps, abar."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    nets = [new_denoiser(D, K) for _ in range(G)]
    with torch.no_grad():
        for net in nets:
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            net.decoder[2].bias.requires_grad_(False)
    query, cand = torch.randn(G, B, D, generator=g), torch.randn(G, N, D, generator=g)
    k = torch.randint(0, K, (G, B), generator=g)
    eps = torch.randn(G, B, N, generator=g)
    return nets, (query, cand, k, eps, alphas_cumprod(cosine_betas(K)), 3.0)


def autograd_float64(nets, args):
    """Losses and gradients of their sum through group_losses, everything in float64."""
    pair = StackedPair([copy.deepcopy(n).double() for n in nets])
    query, cand, k, eps, abar, scale = args
    losses = group_losses(
        pair.params, pair.step_table, query.double(), cand.double(), k, eps.double(),
        abar.double(), scale,
    )  # fmt: skip
    losses.sum().backward()
    return losses.detach(), {n: p.grad for n, p in pair.params.items() if p.requires_grad}


@pytest.mark.parametrize(("G", "B", "N", "W"), [(2, 5, 5, 40), (4, 3, 7, 17), (2, 8, 8, 64)])
def test_pair_logits_kernel_equals_its_torch_twin(G, B, N, W) -> None:
    g = torch.Generator().manual_seed(1)
    HE, GC = torch.randn(G, B, W, generator=g), torch.randn(G, N, W, generator=g)
    w2, dlogit = torch.randn(G, W, generator=g), torch.randn(G, B, N, generator=g)
    leaves = [x.double().requires_grad_() for x in (HE, GC, w2)]
    want = _PairLogits.apply(*leaves)
    want.backward(dlogit.double())
    got = native_loss.pair_logits(HE, GC, w2).double()
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)
    for got, leaf in zip(native_loss.pair_logits_grad(HE, GC, w2, dlogit), leaves, strict=True):
        torch.testing.assert_close(got.double(), leaf.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("G", "B", "N", "D"), [(2, 6, 6, 16), (2, 4, 9, 8), (4, 5, 5, 12)])
def test_losses_and_gradients_equal_autograd_in_float64(G, B, N, D) -> None:
    """One head (G = 2), more candidates than queries, two heads stacked (G = 4)."""
    nets, args = inputs(G, B, N, D)
    want, want_grads = autograd_float64(nets, args)
    pair = StackedPair(copy.deepcopy(nets))
    got = native_loss.losses_and_grads(pair.params, pair.step_table, *args)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert pair.params["decoder.2.bias"].grad is None  # frozen: no gradient
    for name, leaf in zip(pair.names, pair.leaves, strict=True):
        scale = want_grads[name].abs().max()
        assert scale > 1e-3, name  # a gradient that could be wrong
        torch.testing.assert_close(leaf.grad.double(), want_grads[name], rtol=1e-4, atol=1e-5)


def test_gradients_are_added_to_those_already_there() -> None:
    nets, args = inputs(2, 4, 4, 8)
    pair = StackedPair(copy.deepcopy(nets))
    native_loss.losses_and_grads(pair.params, pair.step_table, *args)
    once = [leaf.grad.clone() for leaf in pair.leaves]
    native_loss.losses_and_grads(pair.params, pair.step_table, *args)
    for leaf, g in zip(pair.leaves, once, strict=True):
        torch.testing.assert_close(leaf.grad, 2 * g)


def test_the_same_bytes_on_any_thread_count() -> None:
    nets, args = inputs(2, 16, 16, 32, seed=3)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            pair = StackedPair(copy.deepcopy(nets))
            losses = native_loss.losses_and_grads(pair.params, pair.step_table, *args)
            results.append([losses, *(leaf.grad for leaf in pair.leaves)])
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


def test_compiled_loss_takes_it_on_the_cpu_and_not_for_views() -> None:
    nets, args = inputs(2, 4, 4, 8)
    pair = StackedPair(copy.deepcopy(nets))
    fn = CompiledLoss(batch_size=4)
    assert fn.native(pair.params, args[0])
    assert not fn.native(pair.params, args[0][:, :3])  # another batch size: eager autograd
    rows = {name: p[:2] for name, p in pair.params.items()}  # views: gradients must flow back
    assert not fn.native(rows, args[0])
    assert not CompiledLoss(batch_size=4, enabled=False).native(pair.params, args[0])


def test_training_on_the_cpu_imports_no_compiler(tmp_path) -> None:
    """`train_head` (steps, validation, checkpoint): written out and in C, so neither dynamo nor
    inductor is imported (their import alone costs seconds; compiling the step, tens of
    seconds on a fresh machine)."""
    script = (
        "import sys\n"
        "from diffatr.cache import SyntheticConfig, make_synthetic\n"
        "from diffatr.diffusion_head.config import HeadConfig, RerankConfig\n"
        "from diffatr.diffusion_head.train import train_head\n"
        "tr, va = sys.argv[1] + '/tr.h5', sys.argv[1] + '/va.h5'\n"
        "make_synthetic(tr, SyntheticConfig(n_clips=24, dim=16, seed=1), split='train')\n"
        "make_synthetic(va, SyntheticConfig(n_clips=8, dim=16, seed=2), split='val')\n"
        "cfg = HeadConfig(K=10, batch_size=8, epochs=1)\n"
        "train_head(tr, va, sys.argv[1] + '/h.pt', cfg, RerankConfig(topk=4), progress=False,\n"
        "           echo=lambda s: None)\n"
        "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))\n"
    )
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "c"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr
