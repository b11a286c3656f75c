"""The fused optimiser step (diffatr/diffusion_head/optim.py) on stacked heads against the naive
oracle, each head alone: torch.optim.AdamW, torch.nn.utils.clip_grad_norm_ and a plain EMA
loop; and its gradient norm's fixed partition (the same bits on one thread and on two)."""

import pytest
import torch

from diffatr.diffusion_head.optim import FusedAdamWEMA, _sum_squares

pytestmark = pytest.mark.usefixtures("one_thread")
# one head's tensors, with its two directions as the leading axis: small sizes (one partial
# block of the norm) and one past optim.BLOCK (whole blocks, then the rest)
SHAPES = [(2, 64, 48), (2, 48), (2, 1, 96), (2, 40, 40), (2, 7), (2, 130, 131)]
WD, CLIP, DECAY = 0.1, 1.0, 0.99
SCALES = [0.01, 30.0, 0.3]  # head 0 unclipped, head 1 clipped hard, head 2 near the limit
LRS = [[1e-3, 4e-3, 2e-2, 8e-3], [5e-3, 2e-3, 1e-2, 3e-2], [2e-2, 1e-2, 1e-3, 5e-3]]


def head_tensors(h: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(10 + h)
    params = [torch.randn(s, generator=g) for s in SHAPES]
    return params, [p + 0.05 * torch.randn(p.shape, generator=g) for p in params]


def head_grads(h: int, step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * h + step)
    return [torch.randn(s, generator=g) * SCALES[h] for s in SHAPES]


def naive_head(h: int):
    """Head h alone through PyTorch's trio: its weights, EMA and Adam moments after LRS[h]."""
    params, ema = head_tensors(h)
    params = [p.clone().requires_grad_() for p in params]
    groups = [
        {"params": [p for p in params if p.dim() >= 3], "weight_decay": WD},
        {"params": [p for p in params if p.dim() < 3], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1.0, foreach=False)
    for step, lr in enumerate(LRS[h]):
        for p, g in zip(params, head_grads(h, step), strict=True):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, params, strict=True):
                e.mul_(DECAY).add_(p, alpha=1 - DECAY)
    moments = [(opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]) for p in params]
    return [p.detach() for p in params], ema, moments


@pytest.mark.parametrize("path", ["eager", "c", "compiled"])
def test_stacked_heads_each_equal_the_naive_trio_alone(path, request) -> None:
    compiled = path != "eager"
    if path == "compiled":  # torch.compile'd torch code, not the C kernel
        request.getfixturevalue("torch_optimiser")
    H = len(SCALES)
    each = [head_tensors(h) for h in range(H)]
    params = [torch.cat([e[0][i] for e in each]).requires_grad_() for i in range(len(SHAPES))]
    ema = [torch.cat([e[1][i] for e in each]) for i in range(len(SHAPES))]
    opt = FusedAdamWEMA(params, ema, WD, CLIP, DECAY, compiled=compiled, heads=H)
    for step in range(len(LRS[0])):
        grads = [head_grads(h, step) for h in range(H)]
        for i, p in enumerate(params):
            p.grad = torch.cat([grads[h][i] for h in range(H)])
        opt.step([LRS[h][step] for h in range(H)])
    assert opt.compiled == compiled and opt.steps == [len(LRS[0])] * H
    assert all(p.grad is None for p in params)
    for h in range(H):
        want_p, want_e, want_m = naive_head(h)
        rows = slice(2 * h, 2 * h + 2)
        for i in range(len(SHAPES)):
            close = {"rtol": 1e-5, "atol": 1e-6}
            torch.testing.assert_close(params[i].detach()[rows], want_p[i], **close)
            torch.testing.assert_close(ema[i][rows], want_e[i], **close)
            torch.testing.assert_close(opt.exp_avg[i][rows], want_m[i][0], rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(opt.exp_avg_sq[i][rows], want_m[i][1], rtol=1e-5, atol=1e-9)


def test_moments_live_in_one_contiguous_buffer_each() -> None:
    params, ema = head_tensors(0)
    params = [p.requires_grad_() for p in params]
    opt = FusedAdamWEMA(params, ema, WD, CLIP, DECAY, compiled=False)
    for state in (opt.exp_avg, opt.exp_avg_sq):
        base = state[0].untyped_storage().data_ptr()
        assert all(x.untyped_storage().data_ptr() == base for x in state)
        assert state[0].untyped_storage().nbytes() == 4 * sum(p.numel() for p in params)
    assert opt.exp_avg[0].untyped_storage().data_ptr() != opt.exp_avg_sq[0].untyped_storage(
    ).data_ptr()  # fmt: skip


def test_norm_equals_float64_and_keeps_its_bits_on_two_threads() -> None:
    """Per head, the sum of squares equals the float64 sum; on two threads the fixed partition
    gives the very same bits (tensors large enough for torch to share the work out)."""
    g = torch.Generator().manual_seed(3)
    heads = 2
    grads = [
        torch.randn(heads * 2, 512, 512, generator=g),
        torch.randn(heads * 2, 1000, generator=g),
    ]
    one = _sum_squares(grads, heads)
    want = torch.stack([(x.double() ** 2).reshape(heads, -1).sum(1) for x in grads]).sum(0)
    torch.testing.assert_close(one.double(), want, rtol=1e-6, atol=0)
    torch.set_num_threads(2)  # the one_thread fixture restores the count
    assert torch.equal(_sum_squares(grads, heads), one)
