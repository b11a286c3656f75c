"""Compile fallbacks (diffatr/compiling.py): the fast paths of stacked.py, optim.py and fused.py
run eagerly after a *compilation* failure, with no state changed twice, and let every other
error (one raised while compiled code runs: out of memory, a CUDA error, a bug) propagate.

Failures are simulated with torch.compile backends: one that cannot compile (dynamo wraps its
error as a compilation failure, as it does inductor's), one whose compiled code raises at run
time after doing its work (a crash mid-step)."""

import copy
import warnings

import pytest
import torch
from diffusion_oracle import random_model
from torch._dynamo.backends.common import aot_autograd
from torch._inductor.exc import InductorError

from diffatr.diffusion_head import GalleryDenoiser, fused
from diffatr.diffusion_head import optim as optim_mod
from diffatr.diffusion_head import stacked as stacked_mod
from diffatr.diffusion_head.schedule import alphas_cumprod, cosine_betas

pytestmark = pytest.mark.usefixtures("one_thread")


def cannot_compile(gm, example_inputs):
    raise RuntimeError("no working C++ compiler (simulated)")


def crashes_when_run(gm, example_inputs):
    def run(*args):
        gm(*args)  # the compiled code does its work (in-place updates included), then fails
        raise RuntimeError("CUDA error: an illegal memory access (simulated)")

    return run


def backward_cannot_compile():
    def bw(gm, example_inputs):
        raise InductorError(RuntimeError("backward: no C++ compiler (simulated)"), None)

    return aot_autograd(fw_compiler=lambda gm, _: gm, bw_compiler=bw)


def fallbacks(caught) -> list[str]:
    return [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]


# ------------------------------------------------------------------- stacked.py (the loss)


def loss_inputs(B=4, D=8):
    nets = {"t2a": random_model(D, 1).float(), "a2t": random_model(D, 2).float()}
    for net in nets.values():
        net.decoder[2].bias.requires_grad_(False)
    g = torch.Generator().manual_seed(3)
    text, audio = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    k = torch.randint(0, 10, (2, B), generator=g)
    eps = torch.randn(2, B, B, generator=g)
    rest = (torch.stack([text, audio]), torch.stack([audio, text]), k, eps)
    return nets, (*rest, alphas_cumprod(cosine_betas(10)), 0.5)


def eager_reference(nets, args):
    pair = stacked_mod.StackedPair(copy.deepcopy(nets))
    losses = stacked_mod.group_losses(pair.params, pair.step_table, *args)
    losses.sum().backward()
    return losses.detach(), [leaf.grad for leaf in pair.leaves]


@pytest.mark.usefixtures("torch_loss")  # the torch.compile path, not native_loss
@pytest.mark.parametrize("backend", [cannot_compile, backward_cannot_compile()])
def test_loss_falls_back_on_a_compile_failure_without_doubled_gradients(backend, monkeypatch):
    nets, args = loss_inputs()
    want, want_grads = eager_reference(nets, args)
    compiled = torch.compile(stacked_mod.group_losses, backend=backend)
    monkeypatch.setattr(stacked_mod, "_COMPILED", [compiled])
    fn = stacked_mod.CompiledLoss(batch_size=4)
    pair = stacked_mod.StackedPair(copy.deepcopy(nets))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = fn.losses_and_grads(pair.params, pair.step_table, *args)
    assert len(fallbacks(caught)) == 1 and not fn.enabled
    torch.testing.assert_close(got, want)
    for leaf, g in zip(pair.leaves, want_grads, strict=True):
        torch.testing.assert_close(leaf.grad, g)  # once, not the failed try's plus the eager one


@pytest.mark.usefixtures("torch_loss")  # the torch.compile path, not native_loss
def test_a_backward_failing_after_some_gradients_are_written_is_redone_from_clean(monkeypatch):
    """A graph broken into pieces compiles each piece's backward when it runs: a later piece
    can fail (a compilation failure) after an earlier piece has added its gradients. The eager
    redo starts from the gradients as they were, so each counts once."""
    import torch._dynamo.exc as dynamo_exc

    class FailsToCompileBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            raise dynamo_exc.Unsupported("backward graph of a later piece (simulated)")

    def broken_graph(P, *rest):
        first = next(p for p in P.values() if p.requires_grad)
        late = FailsToCompileBackward.apply(first.sum())  # made first: its backward runs last
        return stacked_mod.group_losses(P, *rest) + 0 * late  # these gradients land first

    nets, args = loss_inputs()
    want, want_grads = eager_reference(nets, args)
    monkeypatch.setattr(stacked_mod, "_COMPILED", [broken_graph])
    fn = stacked_mod.CompiledLoss(batch_size=4)
    pair = stacked_mod.StackedPair(copy.deepcopy(nets))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = fn.losses_and_grads(pair.params, pair.step_table, *args)
    assert len(fallbacks(caught)) == 1 and not fn.enabled
    torch.testing.assert_close(got, want)
    for leaf, g in zip(pair.leaves, want_grads, strict=True):
        torch.testing.assert_close(leaf.grad, g)  # not the failed try's plus the eager one


@pytest.mark.usefixtures("torch_loss")  # the torch.compile path, not native_loss
def test_loss_lets_a_runtime_error_of_compiled_code_propagate(monkeypatch):
    nets, args = loss_inputs()
    crashing = torch.compile(stacked_mod.group_losses, backend=crashes_when_run)
    monkeypatch.setattr(stacked_mod, "_COMPILED", [crashing])
    fn = stacked_mod.CompiledLoss(batch_size=4)
    pair = stacked_mod.StackedPair(copy.deepcopy(nets))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="illegal memory access"):
            fn.losses_and_grads(pair.params, pair.step_table, *args)
    assert not fallbacks(caught) and fn.enabled


# ------------------------------------------------------------------- optim.py (the step)

SHAPES = [(2, 3, 4), (2, 4)]


def optimiser(compiled: bool):
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]
    ema = [p.detach().clone() for p in params]
    opt = optim_mod.FusedAdamWEMA(params, ema, 0.2, 1.0, 0.9, compiled=compiled)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    return opt


def state(opt) -> list[torch.Tensor]:
    return [x.detach().clone() for xs in (opt.params, opt.ema, opt.exp_avg, opt.exp_avg_sq)
            for x in xs]  # fmt: skip


@pytest.mark.usefixtures("torch_optimiser")
def test_optimiser_falls_back_on_a_compile_failure_and_steps_once(monkeypatch):
    want = optimiser(compiled=False)
    want.step(1e-2)
    failing = [torch.compile(f, backend=cannot_compile) for f in (optim_mod._sum_squares,
                                                                  optim_mod._update)]  # fmt: skip
    monkeypatch.setattr(optim_mod, "_COMPILED", failing)
    opt = optimiser(compiled=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step(1e-2)
    assert len(fallbacks(caught)) == 1 and not opt.compiled and opt.t == 1
    for got, exp in zip(state(opt), state(want), strict=True):
        torch.testing.assert_close(got, exp, rtol=0, atol=0)


@pytest.mark.usefixtures("torch_optimiser")
def test_optimiser_lets_a_runtime_error_propagate_and_never_reapplies(monkeypatch):
    want = optimiser(compiled=False)
    want.step(1e-2)
    compiled = [optim_mod._sum_squares, torch.compile(optim_mod._update, backend=crashes_when_run)]
    monkeypatch.setattr(optim_mod, "_COMPILED", compiled)
    opt = optimiser(compiled=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="illegal memory access"):
            opt.step(1e-2)
    assert not fallbacks(caught) and opt.compiled
    for got, exp in zip(state(opt), state(want), strict=True):  # applied once, by the crash
        torch.testing.assert_close(got, exp)


# ------------------------------------------------------------------- fused.py (inference)


def gallery_step(monkeypatch, backend):
    m = random_model(8, 5).float()
    g = torch.Generator().manual_seed(6)
    gallery, query = torch.randn(7, 8, generator=g), torch.randn(3, 8, generator=g)
    compiled = {"_step_shared": torch.compile(fused._step_shared, backend=backend)}
    monkeypatch.setattr(fused, "_COMPILED", compiled)
    gd = GalleryDenoiser(m, gallery, n_steps=10, compiled=True)
    fn = gd.model_fn(gd.query_constants(query), None)
    x_k = torch.randn(3, 7, generator=g)
    k = torch.tensor([2, 5, 9])
    eager = GalleryDenoiser(m, gallery, n_steps=10, compiled=False)
    return gd, fn, x_k, k, eager.model_fn(eager.query_constants(query), None)(x_k, k)


@torch.no_grad()
def test_gallery_step_falls_back_on_a_compile_failure(monkeypatch):
    gd, fn, x_k, k, want = gallery_step(monkeypatch, cannot_compile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = fn(x_k, k)
    assert len(fallbacks(caught)) == 1 and not gd.compiled
    torch.testing.assert_close(got, want)


@torch.no_grad()
def test_gallery_step_lets_a_runtime_error_propagate(monkeypatch):
    gd, fn, x_k, k, _ = gallery_step(monkeypatch, crashes_when_run)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        fn(x_k, k)
    assert gd.compiled
