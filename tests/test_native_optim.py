"""The head's optimiser step in C (diffatr/diffusion_head/adamw_ema.c via native_optim.py)
against its torch twin (optim.py's `_sum_squares` and `_update`, eager) on the same state, and
the properties the trainer relies on: the same bytes on any thread count, one OpenMP runtime
(torch's), the torch code wherever the kernel does not apply."""

import ctypes
import os
import sys

import pytest
import torch

from diffatr.diffusion_head import native_optim, optim
from diffatr.diffusion_head.optim import FusedAdamWEMA

pytestmark = pytest.mark.skipif(native_optim.library() is None, reason="no C compiler")

# stacked shapes (a leading axis of heads x 2 directions): matrices (decayed), vectors, and
# one longer than a norm block (optim.BLOCK) with a ragged tail
SHAPES = [(4, 40, 33), (4, 17), (4, 1, 9), (4, 150, 130)]
WD, CLIP, DECAY = 0.2, 1.0, 0.9


def make(seed: int = 0, heads: int = 2, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]
    ema = [p.detach().clone() + 0.1 for p in params]
    opt = FusedAdamWEMA(params, ema, WD, CLIP, DECAY, compiled=True, heads=heads)
    grads = [[torch.randn(s, generator=g) * scale * (1 + h) for s in SHAPES] for h in range(3)]
    return opt, grads


def state(opt) -> list[torch.Tensor]:
    xs = (opt.params, opt.ema, opt.exp_avg, opt.exp_avg_sq)
    return [x.detach().clone() for group in xs for x in group]


def run(opt, grads, lrs, head=None) -> None:
    for step, lr in enumerate(lrs):
        for p, g in zip(opt.params, grads[step], strict=True):
            p.grad = g.clone()
        opt.step(lr, head=head)


@pytest.mark.parametrize("scale", [1e-3, 10.0], ids=["unclipped", "clipped"])
def test_c_step_equals_the_torch_twin(scale, monkeypatch) -> None:
    lrs = [[1e-3, 4e-3], [5e-3, 1e-3], [2e-2, 3e-3]]
    calls = []
    real = native_optim.step
    monkeypatch.setattr(native_optim, "step", lambda *a: calls.append(1) or real(*a))
    c, grads = make(scale=scale)
    run(c, grads, lrs)
    assert len(calls) == 3  # the C kernel took every step
    eager, _ = make(scale=scale)
    eager.compiled = False  # optim.py's eager torch twin
    run(eager, grads, lrs)
    assert len(calls) == 3
    for got, want in zip(state(c), state(eager), strict=True):
        torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-7)


def test_a_heads_own_step_moves_its_rows_only() -> None:
    c, grads = make()
    before = state(c)
    run(c, grads[:1], [1e-2], head=1)
    eager, _ = make()
    eager.compiled = False
    run(eager, grads[:1], [1e-2], head=1)
    for got, want, old in zip(state(c), state(eager), before, strict=True):
        torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-7)
        assert torch.equal(got[:2], old[:2])  # head 0's rows (and moments) untouched
    assert c.steps == [0, 1]


def test_the_same_bytes_on_any_thread_count() -> None:
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            opt, grads = make(scale=10.0)
            run(opt, grads, [[1e-2, 2e-3]] * 3)
            results.append(state(opt))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


def test_norm_blocks_partition_each_heads_rows() -> None:
    sizes = [2 * 5, 2 * (optim.BLOCK + 7)]
    plan = native_optim.Plan(sizes, 2, optim.BLOCK, [0.0, 0.1])
    assert plan.bn.tolist() == [5, 5, optim.BLOCK, 7, optim.BLOCK, 7]
    assert plan.bo.tolist() == [0, 5, 0, optim.BLOCK, optim.BLOCK + 7, 2 * optim.BLOCK + 7]
    assert plan.block_head.tolist() == [0, 1, 0, 0, 1, 1]


def test_non_contiguous_gradients_take_the_torch_code(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(native_optim, "step", lambda *a: calls.append(1))
    monkeypatch.setattr(optim, "_COMPILED", [optim._sum_squares, optim._update])  # no compile
    opt, grads = make()
    eager, _ = make()
    eager.compiled = False
    for o in (opt, eager):
        for p, g in zip(o.params, grads[0], strict=True):
            p.grad = g.clone()
        strided = grads[0][0].transpose(1, 2).contiguous().transpose(1, 2)  # same values
        assert not strided.is_contiguous()
        o.params[0].grad = strided
        o.step(1e-2)
    assert calls == [] and opt.compiled
    for got, want in zip(state(opt), state(eager), strict=True):
        assert torch.equal(got, want)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_its_openmp_is_torchs() -> None:
    """Built with OpenMP, the kernel runs on the libgomp torch ships and has loaded (one thread
    team), not a second runtime whose threads would spin against torch's (other wheels, e.g.
    faiss-cpu, bring their own libgomp under another name; the kernel must not bind to it)."""
    lib = native_optim.library()
    with open("/proc/self/maps") as f:
        maps = [line.split() for line in f]
    try:
        address = ctypes.cast(lib.omp_get_max_threads, ctypes.c_void_p).value
    except AttributeError:
        pytest.skip("the kernel was built without OpenMP")
    owner = [m[-1] for m in maps if len(m) == 6
             and int(m[0].split("-")[0], 16) <= address < int(m[0].split("-")[1], 16)]  # fmt: skip
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    assert owner and os.path.dirname(os.path.realpath(owner[0])) == os.path.realpath(torch_lib)
