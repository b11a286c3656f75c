"""Mei et al.'s CNN audio encoders (WavCaps retrieval and audio-text_retrieval): Cnn10, Cnn14,
ResNet38 over a torchlibrosa log-mel front end, built on the PANNs blocks of `resnet38.py`.

Reads/writes nothing: an `nn.Module` whose parameter names are those of the original `audio_enc`
(`bn0`, `conv_block1..N`, or `conv_block1` + `resnet.*` + `conv_block_after1`) with the front end
under PANNs' names (`spectrogram_extractor.*`, `logmel_extractor.*`); `from_state_dict` renames a
checkpoint's keys and reads the widths from the tensors' shapes.

Their variant differs from official PANNs (joint-models.md): every conv block of Cnn10/Cnn14 is
followed by a 2x2 average pool, the sixth included (PANNs: 1x1), and there is no fc1. ResNet38 is
PANNs' trunk unchanged. Shapes (B clips, T = L // hop + 1 frames, F mel bins, N conv blocks):
  waves (B, L) -> log-mel (B, 1, T, F) -> bn0 -> trunk (B, C, T', F')
  frames h = mean over F' (B, T', C);  clip z = max_t h + mean_t h (B, C)
  Cnn14: T' = T // 64, C = 2048;  Cnn10: T' = T // 16, C = 512;  ResNet38: T' = T // 32, C = 2048.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchlibrosa.stft import LogmelFilterBank, Spectrogram

from ...errors import UserError
from ..resnet38 import ConvBlock, ResNetBody

ARCHITECTURES = ("cnn10", "cnn14", "resnet38")
TIME_POOLING = {"cnn10": 16, "cnn14": 64, "resnet38": 32}
# Checkpoint prefixes of the front end -> ours (WavCaps wraps it in `audio_feats_extractor`).
_FRONT_END_NAMES = {
    "audio_feats_extractor.mel_trans.": "spectrogram_extractor.",
    "audio_feats_extractor.log_trans.": "logmel_extractor.",
}


@dataclass(frozen=True)
class MelSettings:
    """The log-mel front end (WavCaps' `audio_args`; the same values in both codebases)."""

    sample_rate: int = 32000  # Hz
    n_fft: int = 1024  # window and FFT size, Hann, centred, reflect padding
    hop_length: int = 320  # 10 ms
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14000.0


def front_end(mel: MelSettings) -> tuple[Spectrogram, LogmelFilterBank]:
    """torchlibrosa's STFT (Hann, centred, reflect padding) and log-mel (ref 1, amin 1e-10,
    no top_db), as both codebases build them."""
    spectrogram = Spectrogram(
        n_fft=mel.n_fft,
        hop_length=mel.hop_length,
        win_length=mel.n_fft,
        window="hann",
        center=True,
        pad_mode="reflect",
        freeze_parameters=True,
    )
    logmel = LogmelFilterBank(
        sr=mel.sample_rate,
        n_fft=mel.n_fft,
        n_mels=mel.n_mels,
        fmin=mel.f_min,
        fmax=mel.f_max,
        ref=1.0,
        amin=1e-10,
        top_db=None,
        freeze_parameters=True,
    )
    return spectrogram, logmel


class MeiCnn(nn.Module):
    """A Cnn10/Cnn14/ResNet38 audio encoder of Mei et al.; `forward` gives the frames h."""

    def __init__(
        self,
        arch: str,
        mel: MelSettings,
        widths: tuple[int, ...],
        layers: tuple[int, ...] = (),
    ):
        super().__init__()
        self.arch, self.mel = arch, mel
        self.spectrogram_extractor, self.logmel_extractor = front_end(mel)
        self.bn0 = nn.BatchNorm2d(mel.n_mels)
        if arch == "resnet38":  # widths: conv_block1, the four stages, conv_block_after1
            self.conv_block1 = ConvBlock(1, widths[0])
            self.resnet = ResNetBody(layers, widths[1:5])
            self.conv_block_after1 = ConvBlock(widths[4], widths[5])
        else:
            for i, (c_in, c_out) in enumerate(zip((1, *widths[:-1]), widths, strict=True), 1):
                setattr(self, f"conv_block{i}", ConvBlock(c_in, c_out))
        self.n_blocks = len(widths)
        self.width = widths[-1]

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """waves (B, L) -> bn0-normalised log-mel (B, 1, T, F), float32."""
        x = self.logmel_extractor(self.spectrogram_extractor(waves))  # (B, 1, T, F)
        return self.bn0(x.transpose(1, 3)).transpose(1, 3)  # BN over mel bins

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel (B, 1, T, F) -> last block's output (B, C, T', F')."""
        if self.arch == "resnet38":
            x = self.conv_block1(x, pool_size=(2, 2))  # (B, 64, T/2, F/2)
            x = F.avg_pool2d(self.resnet(x), kernel_size=(2, 2))  # (B, 512, T/32, F/32)
            return self.conv_block_after1(x, pool_size=(1, 1))  # (B, 2048, T/32, F/32)
        for i in range(1, self.n_blocks + 1):  # Mei's variant: 2x2 after every block
            x = getattr(self, f"conv_block{i}")(x, pool_size=(2, 2))
        return x  # (B, C, T/2^N, F/2^N)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """waves (B, L) -> frames h (B, T', C), float32."""
        return self.trunk(self.log_mel(waves)).float().mean(dim=3).transpose(1, 2)


def clip_vector(frames: torch.Tensor) -> torch.Tensor:
    """frames h (B, T', C) -> z = max_t h + mean_t h (B, C), the encoders' output."""
    return frames.amax(dim=1) + frames.mean(dim=1)


def rename_front_end(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's audio_enc state dict with the front end under PANNs' names."""
    out = {}
    for key, value in state.items():
        for old, new in _FRONT_END_NAMES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def infer_architecture(state: dict[str, torch.Tensor], where: str) -> tuple[str, tuple, tuple]:
    """(arch, widths, layers) from the key names and shapes of an audio_enc state dict."""
    if "resnet.layer1.0.conv1.weight" in state:
        layers = tuple(
            len({k.split(".")[2] for k in state if k.startswith(f"resnet.layer{s}.")})
            for s in range(1, 5)
        )
        try:
            widths = (
                state["conv_block1.conv1.weight"].shape[0],
                *(state[f"resnet.layer{s}.0.conv1.weight"].shape[0] for s in range(1, 5)),
                state["conv_block_after1.conv1.weight"].shape[0],
            )
        except KeyError as e:
            raise UserError(f"{where}: a ResNet38 audio encoder without {e.args[0]}") from None
        return "resnet38", tuple(int(w) for w in widths), layers
    blocks = sorted(
        int(k.split(".")[0].removeprefix("conv_block"))
        for k in state
        if k.startswith("conv_block") and k.endswith(".conv1.weight")
    )
    if blocks == list(range(1, 7)):
        arch = "cnn14"
    elif blocks == list(range(1, 5)):
        arch = "cnn10"
    else:
        raise UserError(
            f"{where}: an audio encoder with conv blocks {blocks}; the known architectures are "
            "Cnn10 (4 blocks), Cnn14 (6 blocks) and ResNet38"
        )
    widths = tuple(int(state[f"conv_block{i}.conv1.weight"].shape[0]) for i in blocks)
    return arch, widths, ()


def load_cnn(
    state: dict[str, torch.Tensor], mel: MelSettings, where: str, expect: str | None = None
) -> MeiCnn:
    """Build the encoder the state dict describes and load it strictly; `expect` is the
    architecture a config names (refused when the keys say otherwise)."""
    state = rename_front_end(state)
    state = {k: v for k, v in state.items() if not k.startswith(("fc1.", "fc_audioset."))}
    arch, widths, layers = infer_architecture(state, where)
    if expect is not None and expect != arch:
        raise UserError(f"{where}: the config names {expect} but the weights are {arch}'s")
    model = MeiCnn(arch, mel, widths, layers)
    load_strict(model, state, where, arch)
    return model.eval().requires_grad_(False)


def load_strict(model: nn.Module, state: dict, where: str, what: str) -> None:
    """load_state_dict(strict=True), or a UserError naming the first problems."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        problems = [
            f"{len(keys)} {label} (e.g. {keys[0]})"
            for keys, label in ((missing, "missing keys"), (unexpected, "unexpected keys"))
            if keys
        ]
        problems += [
            f"{k} has shape {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}"
            for k in reshaped[:2]
        ]
        raise UserError(f"{where}: does not fit {what} ({'; '.join(problems)})")
    model.load_state_dict(state, strict=True)
