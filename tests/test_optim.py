"""The fused optimiser step (diffatr/diffusion_head/optim.py) against PyTorch's own trio:
torch.nn.utils.clip_grad_norm_, torch.optim.AdamW and an EMA loop, step for step."""

import warnings

import pytest
import torch

from diffatr.diffusion_head.optim import FusedAdamWEMA

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPES = [(2, 6, 5), (2, 5), (2, 1, 6), (2, 4, 4)]  # stacked: a leading direction axis of 2
WD, CLIP, DECAY = 0.2, 1.0, 0.9


def tensors(seed: int):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]
    ema = [p.detach().clone() + 0.1 for p in params]
    return params, ema


def grads(step: int, scale: float) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=g) * scale for s in SHAPES]


def reference(lrs, scale):
    params, ema = tensors(0)
    groups = [
        {"params": [p for p in params if p.dim() >= 3], "weight_decay": WD},
        {"params": [p for p in params if p.dim() < 3], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1.0, foreach=False)
    for step, lr in enumerate(lrs):
        for p, g in zip(params, grads(step, scale), strict=True):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, params, strict=True):
                e.mul_(DECAY).add_(p, alpha=1 - DECAY)
    return params, ema, opt


@pytest.mark.parametrize("scale", [0.01, 10.0], ids=["unclipped", "clipped"])
@pytest.mark.parametrize("path", ["eager", "c", "compiled"])
def test_fused_step_equals_clip_adamw_and_ema(scale, path, request) -> None:
    compiled = path != "eager"
    if path == "compiled":  # torch.compile'd torch code, not the C kernel
        request.getfixturevalue("torch_optimiser")
    lrs = [1e-3, 5e-3, 2e-2, 1e-2, 3e-3]
    want_p, want_e, ref_opt = reference(lrs, scale)
    params, ema = tensors(0)
    opt = FusedAdamWEMA(params, ema, WD, CLIP, DECAY, compiled=compiled)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step, lr in enumerate(lrs):
            for p, g in zip(params, grads(step, scale), strict=True):
                p.grad = g.clone()
            opt.step(lr)
    assert not [w for w in caught if "torch.compile failed" in str(w.message)]
    assert all(p.grad is None for p in params)
    for i, (p, e) in enumerate(zip(params, ema, strict=True)):
        torch.testing.assert_close(p.detach(), want_p[i].detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(e, want_e[i], rtol=1e-5, atol=1e-6)
        state = ref_opt.state[want_p[i]]
        torch.testing.assert_close(opt.exp_avg[i], state["exp_avg"], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(opt.exp_avg_sq[i], state["exp_avg_sq"], rtol=1e-5, atol=1e-9)


def test_weight_decay_reaches_matrices_only() -> None:
    params, ema = tensors(1)
    opt = FusedAdamWEMA(params, ema, WD, CLIP, DECAY, compiled=False)
    assert opt.decays == [WD, 0.0, WD, WD]  # (2, 5) is a stacked bias: no decay


def test_heads_stacked_step_each_as_alone_with_their_own_clip_and_lr() -> None:
    """Two heads on one leading axis (rows 0-1: head 0, rows 2-3: head 1): head 0's gradients
    are small (unclipped), head 1's large (clipped over its own rows only), each with its own
    learning rates; each must equal the reference run alone."""
    lrs = [[1e-3, 5e-3, 2e-2], [4e-3, 1e-3, 1e-2]]
    scales = [0.01, 10.0]
    want = [reference(lr, scale) for lr, scale in zip(lrs, scales, strict=True)]
    params = [torch.cat([p, p]).detach().requires_grad_() for p in tensors(0)[0]]
    ema = [torch.cat([e, e]) for e in tensors(0)[1]]
    opt = FusedAdamWEMA(params, ema, WD, CLIP, DECAY, compiled=False, heads=2)
    for step in range(3):
        for p, g0, g1 in zip(params, grads(step, scales[0]), grads(step, scales[1]), strict=True):
            p.grad = torch.cat([g0, g1])
        opt.step([lrs[0][step], lrs[1][step]])
    for h, (want_p, want_e, _) in enumerate(want):
        rows = slice(2 * h, 2 * h + 2)
        for p, e, wp, we in zip(params, ema, want_p, want_e, strict=True):
            torch.testing.assert_close(p.detach()[rows], wp.detach(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(e[rows], we, rtol=1e-5, atol=1e-6)
    # one head's own step moves its rows only
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step(1e-2, head=1)
    assert opt.steps == [3, 4]
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p.detach()[:2], b[:2]) and not torch.equal(p.detach()[2:], b[2:])
