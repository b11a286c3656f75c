"""The float32 inference form of Mei et al.'s CNNs (`cnn.py`): the same function, computed faster.

Reads/writes nothing. `to_inference_form(cnn, device)` rewrites a loaded, frozen `MeiCnn` in
place; its `log_mel` and `trunk` keep their signatures and, up to float32 rounding, their values:
  1. every BatchNorm that follows a conv is folded into it (`panns.fold_batchnorm`)
  2. conv weights and activations channels-last, the layout oneDNN (CPU) and cuDNN run fastest
  3. each `ConvBlock` becomes a `FastConvBlock`: conv (+ folded BN) -> ReLU in place -> pool;
     on CPU its 3x3 convs with >= WINOGRAD_MIN_CHANNELS (512) input channels run as Winograd
     F(2x2, 3x3) (`winograd.py`) with the ReLU and the 2x2 pool in the output transform (cuDNN
     picks its own algorithms on GPU)
  4. the STFT as an FFT (`torch.stft`, same periodic Hann window, centring and reflect padding)
     instead of torchlibrosa's 1024-tap DFT convolution, when the model's DFT kernels are the
     standard ones (they are not trained; a checkpoint carrying other ones keeps them)
Measured on Cnn14, 10 s clips, 2-core CPU: ~2.3x the clips/s of the original modules called
one clip at a time (README, "Joint-model extraction"); the tests hold both forms to 1e-5.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torchlibrosa.stft import Spectrogram

from ..panns import fold_batchnorm
from ..resnet38 import ConvBlock
from ..winograd import WinogradConv3x3
from .cnn import MeiCnn

# Below 512 input channels the transforms' memory traffic costs more than the 2.25x fewer
# multiplications save (Cnn14, 10 s clips, batch 8, 2-core CPU: the 64-channel conv 4x slower, the
# 256-channel ones 1.1-1.2x slower; the 512-2048-channel ones of blocks 4-6 1.2-3x faster).
WINOGRAD_MIN_CHANNELS = 512
# A block runs on as many clips at a time as keep its conv output under PIECE_BYTES: larger
# buffers are fresh mappings (past glibc's 32 MB mmap threshold) that the kernel faults in and
# zeroes on every call (Cnn14 blocks 1-3, 10 s clips: 115 ms/clip in batches of 8, 95-103 one
# clip at a time); the deep blocks' small outputs keep whole batches, which share weight reads.
PIECE_BYTES = 24 << 20


class FastConvBlock(nn.Module):
    """A BN-folded `ConvBlock`: relu(conv1(x)) -> relu(conv2(.)) -> average pool."""

    def __init__(self, block: ConvBlock, winograd: bool, min_channels: int):
        super().__init__()
        self.convs = nn.ModuleList([block.conv1, block.conv2])  # BN already folded into them
        self.winograd = [
            WinogradConv3x3(c.weight, c.bias)
            if winograd and c.in_channels >= min_channels
            else None
            for c in self.convs
        ]
        for conv, wino in zip(self.convs, self.winograd, strict=True):
            if wino is not None:  # U replaces the kernel: keep one copy of the weights
                conv.weight = nn.Parameter(conv.weight.new_empty(0), requires_grad=False)

    def _conv(self, i: int, x: torch.Tensor, pool: bool) -> torch.Tensor:
        wino = self.winograd[i]
        if wino is not None:  # (B, C, H, W) channels-last is (B, H, W, C) contiguous
            return wino(x.permute(0, 2, 3, 1), pool).permute(0, 3, 1, 2)
        y = F.relu_(self.convs[i](x))
        return F.avg_pool2d(y, kernel_size=(2, 2)) if pool else y

    def forward(self, x: torch.Tensor, pool_size: tuple[int, int] = (2, 2)) -> torch.Tensor:
        clip_bytes = self.convs[0].out_channels * x.shape[2] * x.shape[3] * x.element_size()
        k = max(1, PIECE_BYTES // clip_bytes)  # clips per piece
        if k < len(x):
            return torch.cat([self._block(x[i : i + k], pool_size) for i in range(0, len(x), k)])
        return self._block(x, pool_size)

    def _block(self, x: torch.Tensor, pool_size: tuple[int, int]) -> torch.Tensor:
        pool = tuple(pool_size) == (2, 2)
        x = self._conv(1, self._conv(0, x, pool=False), pool=pool)
        if not pool and tuple(pool_size) != (1, 1):
            x = F.avg_pool2d(x, kernel_size=pool_size)
        return x


class FftSpectrogram(nn.Module):
    """torchlibrosa's `Spectrogram` (power, Hann, centred, reflect) computed by `torch.stft`."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """waves (B, L) -> power spectrogram (B, 1, T, n_fft // 2 + 1)."""
        spec = torch.stft(
            waves,
            self.n_fft,
            self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # (B, n_fft // 2 + 1, T)
        return torch.view_as_real(spec).square().sum(-1).transpose(1, 2)[:, None]


def _standard_dft(spectrogram: nn.Module, n_fft: int, hop_length: int) -> bool:
    """Whether a torchlibrosa Spectrogram holds the DFT kernels its constructor makes."""
    ref = Spectrogram(n_fft=n_fft, hop_length=hop_length, freeze_parameters=True)
    ours = spectrogram.state_dict()
    return ours.keys() == ref.state_dict().keys() and all(
        torch.allclose(ours[k].float().cpu(), v, rtol=0, atol=1e-6)
        for k, v in ref.state_dict().items()
    )


def to_inference_form(
    cnn: MeiCnn,
    device: torch.device,
    min_channels: int = WINOGRAD_MIN_CHANNELS,
    winograd: bool = True,
) -> MeiCnn:
    """Rewrite a frozen eval-mode `MeiCnn` in place into its fast float32 form (module doc).
    `winograd=False` keeps every conv direct (the bf16/fp16 path: steps 1, 2, 4 and the pieces)."""
    fold_batchnorm(cnn)
    winograd = winograd and device.type == "cpu"
    for name, child in list(cnn.named_children()):
        if isinstance(child, ConvBlock):
            setattr(cnn, name, FastConvBlock(child, winograd, min_channels))
    mel = cnn.mel
    if _standard_dft(cnn.spectrogram_extractor, mel.n_fft, mel.hop_length):
        cnn.spectrogram_extractor = FftSpectrogram(mel.n_fft, mel.hop_length)
    return cnn.to(device).to(memory_format=torch.channels_last)
