"""The float32 inference form of Mei et al.'s CNNs (`fast_cnn.py`) against the original modules
(themselves checked against panns_inference in test_joint_wavcaps.py): BatchNorm folded,
channels-last, Winograd (forced on every 3x3 conv, and at the default threshold), FFT STFT."""

import copy

import numpy as np
import pytest
import torch
from joint_helpers import SR, mlp, randomise_batchnorm, tiny_cnn
from torchlibrosa.stft import Spectrogram

from diffatr.extract.joint.audio import CnnJointAudio
from diffatr.extract.joint.cnn import MeiCnn, MelSettings, clip_vector
from diffatr.extract.joint.fast_cnn import (
    FastConvBlock,
    FftSpectrogram,
    to_inference_form,
)

CPU = torch.device("cpu")


def waves(n: int, seconds: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    tone = torch.sin(2 * torch.pi * (200 + 3000 * torch.rand(n, 1, generator=g)) * t)
    return (0.3 * tone + 0.05 * torch.randn(n, len(t), generator=g)).float()  # (n, L)


def original(cnn: MeiCnn, x: torch.Tensor) -> torch.Tensor:
    """Frames h (B, T', C) from the untouched modules, one clip at a time."""
    with torch.no_grad():
        return torch.cat([cnn(x[i : i + 1]) for i in range(len(x))])


@pytest.mark.parametrize("arch", ["cnn14", "cnn10", "resnet38"])
@pytest.mark.parametrize("seconds", [1.0, 1.37, 2.9])
def test_inference_form_equals_the_original(arch, seconds):
    cnn = tiny_cnn(arch, seed=2)
    x = waves(3, seconds, seed=int(seconds * 100))
    want = original(cnn, x)
    fast = to_inference_form(copy.deepcopy(cnn), CPU, min_channels=1)  # Winograd everywhere
    blocks = [m for m in fast.modules() if isinstance(m, FastConvBlock)]
    assert blocks and all(w is not None for b in blocks for w in b.winograd)
    assert isinstance(fast.spectrogram_extractor, FftSpectrogram)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules() if m is not fast.bn0)
    with torch.no_grad():
        got = fast(x)  # the whole batch at once
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (clip_vector(got) - clip_vector(want)).abs().max() < 1e-5 * want.abs().max()


def test_default_threshold_uses_winograd_for_wide_layers_only():
    """A Cnn10 whose last block is 512 wide: Winograd for its 512-channel input only."""
    torch.manual_seed(0)
    cnn = MeiCnn("cnn10", MelSettings(), (4, 8, 16, 512)).eval().requires_grad_(False)
    randomise_batchnorm(cnn, 5)
    x = waves(2, 1.2, seed=3)
    want = original(cnn, x)
    fast = to_inference_form(copy.deepcopy(cnn), CPU)
    used = [w is not None for i in range(1, 5) for w in getattr(fast, f"conv_block{i}").winograd]
    assert used == [False] * 7 + [True]  # input channels 1, 4, 4, 8, 8, 16, 16 | 512
    with torch.no_grad():
        torch.testing.assert_close(fast(x), want, rtol=1e-5, atol=1e-5)


def test_encoder_fp32_is_the_inference_form_and_batch_invariant():
    cnn, proj = tiny_cnn("cnn14", seed=4), mlp(16, 12, 8, seed=5)
    naive = copy.deepcopy(cnn)
    enc = CnnJointAudio(
        cnn, proj, device="cpu", precision="fp32", frames=True, provenance={"settings": {}}
    )
    assert any(isinstance(m, FastConvBlock) for m in enc.cnn.modules())
    assert "Winograd" in enc.provenance()["settings"]["computation"]
    x = waves(4, 1.5, seed=6)
    a, h = enc.features(x.numpy())
    with torch.no_grad():
        want_h = original(naive, x)
        want_a = torch.nn.functional.normalize(proj(clip_vector(want_h)), dim=-1)
    torch.testing.assert_close(h, want_h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, want_a, rtol=1e-5, atol=1e-5)
    alone, _ = enc.features(x[1:2].numpy())
    np.testing.assert_allclose(alone.numpy(), a[1:2].numpy(), atol=1e-6)


def test_fft_spectrogram_equals_torchlibrosa_and_other_kernels_are_kept():
    x = waves(2, 1.0, seed=7)
    ref = Spectrogram(n_fft=1024, hop_length=320, freeze_parameters=True)
    with torch.no_grad():
        want, got = ref(x), FftSpectrogram(1024, 320)(x)
    assert got.shape == want.shape == (2, 1, SR // 320 + 1, 513)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3 * float(want.max()) * 1e-3)
    cnn = tiny_cnn("cnn10", seed=8)
    with torch.no_grad():
        cnn.spectrogram_extractor.stft.conv_real.weight.mul_(1.01)  # not the standard DFT
    fast = to_inference_form(cnn, CPU)
    assert isinstance(fast.spectrogram_extractor, Spectrogram)


@pytest.mark.parametrize("arch", ["cnn14", "resnet38"])
def test_full_size_inference_form_at_the_default_threshold(arch):
    """The real widths (Cnn14: 64..2048; ResNet38's 512 -> 2048 last block), 1 s clips."""
    torch.manual_seed(1)
    if arch == "cnn14":
        cnn = MeiCnn("cnn14", MelSettings(), (64, 128, 256, 512, 1024, 2048))
    else:
        cnn = MeiCnn("resnet38", MelSettings(), (64, 64, 128, 256, 512, 2048), (3, 4, 6, 3))
    cnn = cnn.eval().requires_grad_(False)
    randomise_batchnorm(cnn, 9)
    x = waves(2, 1.0, seed=10)
    want = original(cnn, x)
    fast = to_inference_form(copy.deepcopy(cnn), CPU)
    n_winograd = sum(
        w is not None for m in fast.modules() if isinstance(m, FastConvBlock) for w in m.winograd
    )
    assert n_winograd == (5 if arch == "cnn14" else 2)  # blocks 4-6 | conv_block_after1
    with torch.no_grad():
        got = fast(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_blocks_split_large_batches_into_pieces(monkeypatch):
    """One clip per piece (PIECE_BYTES tiny) gives the whole batch's result, and the original's."""
    import diffatr.extract.joint.fast_cnn as fast_cnn

    cnn = tiny_cnn("cnn14", seed=11)
    x = waves(3, 1.2, seed=12)
    want = original(cnn, x)
    fast = to_inference_form(copy.deepcopy(cnn), CPU, min_channels=8)
    with torch.no_grad():
        whole = fast(x)
        monkeypatch.setattr(fast_cnn, "PIECE_BYTES", 1)
        pieces = fast(x)
    torch.testing.assert_close(pieces, whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pieces, want, rtol=1e-5, atol=1e-5)
