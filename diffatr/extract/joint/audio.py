"""The audio side of Mei et al.'s joint models (CNN kinds): waveforms -> L2-normalised
joint-space vectors, with the extraction pipeline's encoder interface.

Reads/writes nothing (the weights come in as modules). Per batch of equal-length clips:
    h = MeiCnn(waves)            frames (B, T', C)
    z = max_t h + mean_t h       (B, C), the encoder output
    a = normalize(audio_proj(z)) (B, E)
Every clip is encoded whole at its own length (no padding to 10 s, no window: a CNN takes any
length; long clips are not cropped, unlike the random crop their training used). Clips shorter
than 1 s are zero-padded at the end to 1 s (`ClipPadder`, as for PANNs).

Precision: "fp32" runs the CNN's float32 inference form (`fast_cnn.py`: BatchNorm folded,
channels-last, Winograd for the deep convs on CPU, an FFT front end; the original function up to
rounding, ~2x faster on CPU); "bf16"/"fp16" run the same form without Winograd, with the conv
weights in that dtype, under autocast (as `panns.AudioEncoder`); the log-mel front end, pooling
and projection stay float32. Outputs are float32.
"""

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...device import resolve_device
from ...errors import UserError
from ..bf16 import warn_if_emulated
from ..panns import ClipPadder
from .cnn import TIME_POOLING, MeiCnn, clip_vector
from .fast_cnn import to_inference_form

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in ("fp32", "bf16", "fp16"):
        raise UserError(f"--precision {precision!r}: choose one of fp32, bf16, fp16")
    if precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA device; on CPU use bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--precision bf16: this GPU has no bfloat16 support; use fp16")
    warn_if_emulated(precision, device.type)


class CnnJointAudio:
    """A frozen Mei et al. CNN + audio projection on one device: equal-length batches -> (B, E)."""

    def __init__(
        self,
        cnn: MeiCnn,
        proj: nn.Module,
        *,
        device: str,
        precision: str,
        frames: bool,
        provenance: dict,
    ):
        self.device = resolve_device(device)
        check_precision(precision, self.device)
        self.precision, self.frames = precision, frames
        self.memory_format = torch.channels_last
        cnn = to_inference_form(cnn, self.device, winograd=precision == "fp32")
        if precision != "fp32":
            for module in cnn.modules():
                if isinstance(module, nn.Conv2d):  # the trunk only: the STFT is a Conv1d
                    module.to(_AUTOCAST[precision])
        self.cnn = cnn.to(self.device).to(memory_format=self.memory_format)
        self.proj = proj.to(self.device)
        self.sample_rate = cnn.mel.sample_rate
        self.dim = int(proj[-1].out_features)
        self.frame_dim = cnn.width
        self.prepare = ClipPadder(int(cnn.mel.sample_rate))  # 1 s
        self.time_pooling = TIME_POOLING[cnn.arch]
        self._provenance = provenance

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision])

    @torch.inference_mode()
    def features(self, waves: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """waves (B, L) of one length -> (a (B, E) normalised, frames h (B, T', C)), float32."""
        x = torch.as_tensor(waves, dtype=torch.float32).to(self.device)
        x = self.cnn.log_mel(x).contiguous(memory_format=self.memory_format)  # (B, 1, T, F)
        with self._autocast():
            x = self.cnn.trunk(x)  # (B, C, T', F')
        h = x.float().mean(dim=3).transpose(1, 2)  # (B, T', C)
        a = F.normalize(self.proj(clip_vector(h)), dim=-1)  # (B, E)
        return a, h

    def embed(self, waves) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """The pipeline's call: (B, E) float32 and, with frames, B arrays (T', C)."""
        a, h = self.features(waves)
        frames = list(h.cpu().numpy()) if self.frames else None
        return a.cpu().numpy(), frames

    def provenance(self) -> dict:
        settings = dict(self._provenance["settings"])
        settings.update(
            device_type=self.device.type,
            precision=self.precision,
            computation=(
                "float32 inference form: BatchNorm folded, channels-last, Winograd F(2x2,3x3) "
                "for convs of >= 512 input channels on CPU, FFT STFT"
                if self.precision == "fp32"
                else f"BatchNorm folded, {self.precision} conv trunk under autocast"
            ),
            frames=self.frames,
            min_samples=self.prepare.min_samples,
            short_clip_rule="zero-pad at the end to 1 s",
            long_clip_rule="the whole clip (a CNN takes any length; no crop)",
            frame_seconds=self.time_pooling * self.cnn.mel.hop_length / self.sample_rate,
            frame_features="last conv block, mean over frequency (backbone width)",
        )
        return {**self._provenance, "settings": settings, "sample_rate": self.sample_rate}


class PipelineText:
    """The extraction pipeline's text-encoder interface over a `JointTextEncoder`."""

    def __init__(self, encoder, provenance: dict, tokens: bool):
        self.encoder, self.tokens, self._provenance = encoder, tokens, provenance
        self.dim = encoder.dim

    def encode(self, captions, batch_size: int = 64):
        emb, states = self.encoder.embed(list(captions), batch_size, tokens=self.tokens)
        return emb.numpy(), states

    def provenance(self) -> dict:
        settings = dict(self._provenance["settings"])
        settings.update(
            device_type=self.encoder.device.type,
            precision=self.encoder.precision,
            tokens=self.tokens,
            max_length_used=self.encoder.max_length,
            padding_side="right",
            batches="sorted by token count, padded per batch, attention-masked",
        )
        if self.tokens:
            settings["token_features"] = "text model last_hidden_state, non-padding tokens"
        return {**self._provenance, "settings": settings}
