"""Winograd F(2x2, 3x3) against the direct convolution (float64 `F.conv2d` + bias + ReLU + 2x2
average pool): odd and even sizes, one and several chunks of tiles, batches."""

import pytest
import torch
import torch.nn.functional as F

from diffatr.extract.winograd import WinogradConv3x3


def direct(x, w, b, pool):  # the plain formulas, float64, (B, C, H, W)
    y = F.relu(F.conv2d(x.double(), w.double(), b.double(), padding=1))
    return F.avg_pool2d(y, kernel_size=(2, 2)) if pool else y


@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize(("batch", "h", "w", "max_tiles"), [(1, 7, 5, 1024), (3, 12, 9, 4)])
def test_winograd_equals_the_direct_convolution(pool, batch, h, w, max_tiles):
    g = torch.Generator().manual_seed(h * w)
    c_in, c_out = 6, 5
    x = torch.randn(batch, c_in, h, w, generator=g)
    weight, bias = torch.randn(c_out, c_in, 3, 3, generator=g), torch.randn(c_out, generator=g)
    wino = WinogradConv3x3(weight, bias, max_tiles=max_tiles)
    got = wino(x.permute(0, 2, 3, 1).contiguous(), pool).permute(0, 3, 1, 2)  # (B, Co, H', W')
    want = direct(x, weight, bias, pool)
    assert got.shape == want.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert (want == 0).any() and (want > 0).any()  # the ReLU mattered


def test_winograd_is_not_the_unpadded_or_unbiased_convolution():
    """Guards against an oracle that agrees with anything: zero bias and the edge tiles show."""
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(1, 3, 6, 6, generator=g), torch.randn(4, 3, 3, 3, generator=g)
    bias = torch.randn(4, generator=g)
    got = WinogradConv3x3(weight, bias)(x.permute(0, 2, 3, 1).contiguous(), False)
    no_bias = direct(x, weight, torch.zeros(4), False).permute(0, 2, 3, 1)
    assert not torch.allclose(got.double(), no_bias, atol=1e-3)
    with pytest.raises(ValueError, match="3x3"):
        WinogradConv3x3(torch.randn(4, 3, 5, 5), bias)
