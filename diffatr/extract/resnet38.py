"""PANNs ResNet38 (Kong et al., 2020, "PANNs: Large-Scale Pretrained Audio Neural Networks").

Reads and writes nothing: an `nn.Module` whose `state_dict` names and shapes are those of
`ResNet38` in the authors' training code (audioset_tagging_cnn, pytorch/models.py), so the released
checkpoint `ResNet38_mAP=0.434.pth` loads with `strict=True`. panns_inference does not ship it.

Written for extraction: the spectrogram augmentation and mixup of the training code are left out
(they hold no parameters and are off in eval mode). Dropout is kept where the original has it, so
`forward` matches the original in both modes apart from those two.

Shapes (B clips, L samples, T = L // hop + 1 frames, F = 64 mel bins):
  waves (B, L) -> log-mel (B, 1, T, F) -> conv_block1 (B, 64, T/2, F/2)
  -> resnet layer1..4 (B, 512, T/16, F/16) -> avg-pool (B, 512, T/32, F/32)
  -> conv_block_after1 (B, 2048, T/32, F/32)   (all divisions round down)
"""

import torch
import torch.nn.functional as F
from torch import nn
from torchlibrosa.stft import LogmelFilterBank, Spectrogram

LAYERS = (3, 4, 6, 3)  # basic blocks per stage: 3 + 4 + 6 + 3 = 16 blocks, 32 conv layers
WIDTHS = (64, 128, 256, 512)  # channels per stage


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=False)


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU, then average pooling (PANNs' `ConvBlock`, avg pooling only)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, pool_size: tuple[int, int] = (2, 2)) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool_size)


class BasicBlock(nn.Module):
    """Residual block; stride 2 halves time and frequency by average pooling before conv1."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.conv1 = conv3x3(c_in, c_out)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride == 2:
            # Index 0 is the parameter-free pooling, so the checkpoint's keys are
            # downsample.1.weight (conv) and downsample.2.* (BN).
            self.downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=2),
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, bias=False),
                nn.BatchNorm2d(c_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool2d(x, kernel_size=(2, 2)) if self.stride == 2 else x
        out = F.relu(self.bn1(self.conv1(out)))
        out = F.dropout(out, p=0.1, training=self.training)
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNetBody(nn.Module):
    """Four stages of basic blocks (the original's `_ResNet`); stages 2-4 start with stride 2."""

    def __init__(self, layers: tuple[int, ...] = LAYERS, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        c_in = widths[0]
        for stage, (n_blocks, width) in enumerate(zip(layers, widths, strict=True), start=1):
            stride = 1 if stage == 1 else 2
            blocks = [BasicBlock(c_in, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            c_in = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ResNet38(nn.Module):
    """PANNs ResNet38 with the original constructor signature and output dict."""

    def __init__(
        self,
        sample_rate: int = 32000,
        window_size: int = 1024,
        hop_size: int = 320,
        mel_bins: int = 64,
        fmin: int = 50,
        fmax: int = 14000,
        classes_num: int = 527,
    ):
        super().__init__()
        self.spectrogram_extractor = Spectrogram(
            n_fft=window_size,
            hop_length=hop_size,
            win_length=window_size,
            window="hann",
            center=True,
            pad_mode="reflect",
            freeze_parameters=True,
        )
        self.logmel_extractor = LogmelFilterBank(
            sr=sample_rate,
            n_fft=window_size,
            n_mels=mel_bins,
            fmin=fmin,
            fmax=fmax,
            ref=1.0,
            amin=1e-10,
            top_db=None,
            freeze_parameters=True,
        )
        self.bn0 = nn.BatchNorm2d(mel_bins)
        self.conv_block1 = ConvBlock(1, WIDTHS[0])
        self.resnet = ResNetBody()
        self.conv_block_after1 = ConvBlock(WIDTHS[-1], 2048)
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, classes_num)
        self._init_weights()

    def _init_weights(self) -> None:
        """The original's initialisation: Xavier-uniform weights, zero biases, unit BN scales,
        and zero scale on each residual branch's last BN (so every block starts as identity)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.resnet.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel (B, 1, T, F) -> last conv block output (B, 2048, T', F')."""
        x = self.conv_block1(x, pool_size=(2, 2))  # (B, 64, T/2, F/2)
        x = F.dropout(x, p=0.2, training=self.training)
        x = self.resnet(x)  # (B, 512, T/16, F/16)
        x = F.avg_pool2d(x, kernel_size=(2, 2))  # (B, 512, T/32, F/32)
        x = F.dropout(x, p=0.2, training=self.training)
        return self.conv_block_after1(x, pool_size=(1, 1))  # (B, 2048, T', F')

    def forward(self, waves: torch.Tensor) -> dict[str, torch.Tensor]:
        """waves (B, L) -> {"clipwise_output": (B, classes), "embedding": (B, 2048)}."""
        x = self.spectrogram_extractor(waves)  # (B, 1, T, window_size // 2 + 1)
        x = self.logmel_extractor(x)  # (B, 1, T, F)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # BN over mel bins, (B, 1, T, F)
        x = self.trunk(x)
        x = F.dropout(x, p=0.2, training=self.training)
        x = x.mean(dim=3)  # (B, 2048, T')
        x = x.max(dim=2).values + x.mean(dim=2)  # (B, 2048)
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu(self.fc1(x))
        embedding = F.dropout(x, p=0.5, training=self.training)
        return {"clipwise_output": torch.sigmoid(self.fc_audioset(x)), "embedding": embedding}
