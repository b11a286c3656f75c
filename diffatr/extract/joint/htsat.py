"""HTSAT (the WavCaps retrieval audio encoder of type `transformer`) as `transformers`'
`ClapAudioEncoder`, which computes the same function once the weights are renamed.

Reads: the `audio_encoder.audio_enc.*` part of a WavCaps checkpoint (HTSAT's Swin names) and the
config's `audio_args`. Writes nothing.

HTSAT: log-mel (B, 1, T, F) -> bn0 -> bicubic stretch of T to spec_size * freq_ratio (1024)
frames (align_corners) -> a spec_size x spec_size image -> Swin (patch 4, embed 96, depths
2-2-6-2, heads 4-8-16-32, window 8) -> LayerNorm -> the average-pooled latent (768-d). In
ClapAudioEncoder: `batch_norm` = bn0, `reshape_mel2img` = their `reshape_wav2img`, `pooler_output`
= their `embedding`. Renaming (theirs -> transformers'):
    bn0 -> batch_norm;  blocks.j.norm1 / norm2 -> layernorm_before / layernorm_after
    attn.qkv (3C, C) -> attention.self.{query, key, value}: rows [0:C], [C:2C], [2C:3C]
    attn.proj -> attention.output.dense;  mlp.fc1 / fc2 -> intermediate.dense / output.dense
    attn.relative_position_{bias_table,index} -> attention.self.*; attn_mask (a buffer the
    encoder recomputes), tscam_conv.*, head.* (the tagging head) -> dropped.
Widths, depths, heads and the window are read from the shapes; spec_size is HTSAT's 256.
Clips longer than the window (1024 frames, 10.23 s at 32 kHz; their code asserts) follow the
CLAP rule (`config.LONG_CLIP_POLICY`): the mean of the normalised vectors of consecutive
1024-frame windows, the last ending at the clip's end, normalised.
"""

import math
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...device import resolve_device
from ...errors import UserError
from ..panns import ClipPadder
from .audio import _AUTOCAST, check_precision
from .clap import window_starts
from .cnn import MelSettings, front_end, load_strict
from .config import LONG_CLIP_POLICY, Runtime

SPEC_SIZE = 256  # HTSAT's image side (fixed in their AudioEncoder)
_RENAMES = [
    (r"^bn0\.", "batch_norm."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
    (r"\.attn\.proj\.", ".attention.output.dense."),
    (r"\.attn\.relative_position", ".attention.self.relative_position"),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
]
_DROPPED = re.compile(r"(\.attn_mask$|^tscam_conv\.|^head\.|^audio_feats_extractor\.)")


def to_clap_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HTSAT's state dict under ClapAudioEncoder's names (fused qkv split in three)."""
    out = {}
    for key, value in state.items():
        if _DROPPED.search(key):
            continue
        if ".attn.qkv." in key:
            q, k, v = value.chunk(3, dim=0)  # (3C, C) -> 3 x (C, C); or (3C,) biases
            for name, part in zip(("query", "key", "value"), (q, k, v), strict=True):
                out[key.replace(".attn.qkv.", f".attention.self.{name}.")] = part.clone()
            continue
        for pattern, new in _RENAMES:
            key = re.sub(pattern, new, key)
        out[key] = value
    return out


def htsat_config(state: dict[str, torch.Tensor], n_mels: int, where: str):
    """A ClapAudioConfig with the widths, depths, heads and window the shapes say."""
    from transformers import ClapAudioConfig

    try:
        proj = state["patch_embed.proj.weight"]  # (embed, 1, patch, patch)
        n_layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("layers."))
        depths, heads = [], []
        for i in range(n_layers):
            blocks = [k for k in state if re.match(rf"layers\.{i}\.blocks\.\d+\.norm1\.weight$", k)]
            depths.append(len(blocks))
            heads.append(
                int(state[f"layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1])
            )
        table = state["layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
        fc1 = state["layers.0.blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as e:
        raise UserError(f"{where}: not an HTSAT audio encoder (no {e})") from None
    embed = int(proj.shape[0])
    window = (round(math.sqrt(table)) + 1) // 2  # the table has (2w - 1)^2 rows
    return ClapAudioConfig(
        spec_size=SPEC_SIZE,
        num_mel_bins=n_mels,
        patch_size=int(proj.shape[-1]),
        patch_stride=int(proj.shape[-1]),
        patch_embeds_hidden_size=embed,
        hidden_size=embed * 2 ** (n_layers - 1),
        depths=depths,
        num_attention_heads=heads,
        window_size=window,
        mlp_ratio=fc1 / embed,
        enable_fusion=False,
        enable_patch_layer_norm="patch_embed.norm.weight" in state,
        layer_norm_eps=1e-5,
        drop_path_rate=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


class HtsatJointAudio:
    """HTSAT + audio projection on one device: equal-length batches -> (B, E) float32."""

    def __init__(self, encoder, front, proj, mel: MelSettings, rt: Runtime, provenance: dict):
        self.device = resolve_device(rt.audio_device)
        check_precision(rt.precision, self.device)
        self.precision, self.mel = rt.precision, mel
        self.encoder = encoder.to(self.device)
        self.front = front.to(self.device)
        self.proj = proj.to(self.device)
        self.sample_rate = mel.sample_rate
        frames = SPEC_SIZE * (SPEC_SIZE // mel.n_mels)  # 1024 mel frames at most
        self.window = (frames - 1) * mel.hop_length  # samples giving exactly that many frames
        self.dim = int(proj[-1].out_features)
        self.frame_dim = 0
        self.prepare = ClipPadder(int(mel.sample_rate))  # 1 s, as for the CNNs
        self._provenance = provenance

    def _embed_windows(self, x: torch.Tensor) -> torch.Tensor:
        """Windows (n, L <= W) -> (n, E) normalised."""
        mel = self.front(x.to(self.device))  # (n, 1, T, F)
        with torch.autocast(self.device.type, dtype=_AUTOCAST.get(self.precision, torch.float32),
                            enabled=self.precision != "fp32"):  # fmt: skip
            latent = self.encoder(mel).pooler_output  # (n, 768)
        return F.normalize(self.proj(latent.float()), dim=-1)

    @torch.inference_mode()
    def features(self, waves) -> torch.Tensor:
        waves = torch.as_tensor(np.asarray(waves), dtype=torch.float32)  # (B, L)
        starts = window_starts(waves.shape[1], self.window)
        if len(starts) == 1:
            return self._embed_windows(waves).cpu()
        windows = torch.stack([waves[:, s : s + self.window] for s in starts], dim=1)
        e = self._embed_windows(windows.flatten(0, 1)).view(len(waves), len(starts), -1)
        return F.normalize(e.mean(dim=1), dim=-1).cpu()  # (B, E)

    def embed(self, waves) -> tuple[np.ndarray, None]:
        return self.features(waves).numpy(), None

    def provenance(self) -> dict:
        settings = dict(self._provenance["settings"])
        settings.update(
            device_type=self.device.type,
            precision=self.precision,
            window_samples=self.window,
            long_clip_rule=f"windows of {self.window} samples: {LONG_CLIP_POLICY}",
            short_clip_rule="zero-pad at the end to 1 s, then HTSAT's bicubic stretch",
        )
        return {**self._provenance, "settings": settings, "sample_rate": self.sample_rate}


class _FrontEnd(nn.Module):
    """waves (B, L) -> log-mel (B, 1, T, F) (bn0 is the encoder's batch_norm)."""

    def __init__(self, mel: MelSettings):
        super().__init__()
        self.spectrogram_extractor, self.logmel_extractor = front_end(mel)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.logmel_extractor(self.spectrogram_extractor(waves))


def load_htsat_audio(state, proj, mel: MelSettings, where: str, rt: Runtime, provenance, shared):
    """The WavCaps HTSAT audio side from `audio_encoder.audio_enc.*` (prefix removed)."""
    from transformers.models.clap.modeling_clap import ClapAudioEncoder

    if rt.frames:
        raise UserError(f"{where}: --frames: the HTSAT encoder gives no frame features here")
    config = htsat_config(state, mel.n_mels, where)
    if SPEC_SIZE % mel.n_mels:
        raise UserError(f"{where}: HTSAT needs n_mels dividing {SPEC_SIZE}, not {mel.n_mels}")
    encoder = ClapAudioEncoder(config)
    load_strict(encoder, to_clap_names(state), where, "HTSAT (as ClapAudioEncoder)")
    encoder = encoder.float().eval().requires_grad_(False)
    front = _FrontEnd(mel)
    front_state = {
        k.replace("audio_feats_extractor.mel_trans.", "spectrogram_extractor.").replace(
            "audio_feats_extractor.log_trans.", "logmel_extractor."
        ): v
        for k, v in state.items()
        if k.startswith("audio_feats_extractor.")
    }
    load_strict(front, front_state, where, "the log-mel front end")
    if proj[0].in_features != config.hidden_size:
        raise UserError(
            f"{where}: audio_proj takes {proj[0].in_features}-d input but HTSAT gives "
            f"{config.hidden_size}-d"
        )
    settings = {**shared, **vars(mel), "htsat_config": config.to_json_string(use_diff=True)}
    return HtsatJointAudio(
        encoder, front.eval(), proj, mel, rt, {**provenance, "settings": settings}
    )
