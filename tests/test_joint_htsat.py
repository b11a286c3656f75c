"""WavCaps HTSAT checkpoints: the Swin weights under HTSAT's names (fused qkv, norm1/norm2,
mlp.fc1/fc2, attn.proj, bn0, plus an attn_mask buffer and the tagging head) are mapped onto
transformers' ClapAudioEncoder; the vectors equal ClapAudioEncoder run directly on the torchlibrosa
log-mel, projected and normalised by plain formulas; clips over 10.23 s follow the window rule."""

import numpy as np
import pytest
import torch
from joint_helpers import EMBED, WAVCAPS_AUDIO_ARGS, l2, mlp, mlp_np, tiny_bert
from torchlibrosa.stft import LogmelFilterBank, Spectrogram

from diffatr.extract.joint import JointConfig, Runtime, load_joint

SR = 32000


def _htsat_names(clap_state: dict) -> dict:
    """ClapAudioEncoder names -> HTSAT's (the inverse map, written out independently)."""
    out, qkv = {}, {}
    for key, value in clap_state.items():
        for name in ("query", "key", "value"):
            marker = f".attention.self.{name}."
            if marker in key:
                stem, kind = key.split(marker)
                qkv.setdefault((stem, kind), {})[name] = value
                break
        else:
            new = key.replace("batch_norm.", "bn0.") if key.startswith("batch_norm.") else key
            new = new.replace(".layernorm_before.", ".norm1.").replace(
                ".layernorm_after.", ".norm2."
            )
            new = new.replace(".attention.output.dense.", ".attn.proj.")
            new = new.replace(".attention.self.relative_position", ".attn.relative_position")
            new = new.replace(".intermediate.dense.", ".mlp.fc1.").replace(
                ".output.dense.", ".mlp.fc2."
            )
            out[new] = value
    for (stem, kind), parts in qkv.items():
        out[f"{stem}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


@pytest.fixture(scope="module")
def htsat(tmp_path_factory):
    from transformers import ClapAudioConfig
    from transformers.models.clap.modeling_clap import ClapAudioEncoder

    torch.manual_seed(0)
    config = ClapAudioConfig(
        spec_size=256, num_mel_bins=64, patch_size=4, patch_stride=4, window_size=8,
        depths=[1, 2], num_attention_heads=[1, 2], patch_embeds_hidden_size=8, hidden_size=16,
        enable_fusion=False,
    )  # fmt: skip
    encoder = ClapAudioEncoder(config).eval()
    with torch.no_grad():
        encoder.batch_norm.running_mean.normal_(0, 0.5)
        encoder.batch_norm.running_var.uniform_(0.5, 2)
        for name, p in encoder.named_parameters():
            if "relative_position_bias_table" in name:
                p.normal_(0, 0.5)
    spectrogram = Spectrogram(n_fft=1024, hop_length=320, freeze_parameters=True)
    logmel = LogmelFilterBank(
        sr=SR, n_fft=1024, n_mels=64, fmin=50, fmax=14000, ref=1.0, amin=1e-10, top_db=None,
        freeze_parameters=True,
    )  # fmt: skip
    audio_state = _htsat_names(encoder.state_dict())
    audio_state["layers.1.blocks.1.attn_mask"] = torch.zeros(16, 64, 64)  # a shifted block's
    audio_state["tscam_conv.weight"] = torch.zeros(527, 16, 4, 3)
    audio_state["head.weight"] = torch.zeros(527, 527)
    for k, v in spectrogram.state_dict().items():
        audio_state[f"audio_feats_extractor.mel_trans.{k}"] = v
    for k, v in logmel.state_dict().items():
        audio_state[f"audio_feats_extractor.log_trans.{k}"] = v
    bert, proj, text_proj = tiny_bert(), mlp(16, EMBED, EMBED, 4), mlp(32, EMBED, EMBED, 5)
    state = {f"audio_encoder.audio_enc.{k}": v for k, v in audio_state.items()}
    state.update({f"text_encoder.text_encoder.{k}": v for k, v in bert.state_dict().items()})
    state.update({f"audio_proj.{k}": v for k, v in proj.state_dict().items()})
    state.update({f"text_proj.{k}": v for k, v in text_proj.state_dict().items()})
    config_dict = {
        "embed_size": EMBED,
        "audio_args": dict(WAVCAPS_AUDIO_ARGS),
        "audio_encoder_args": {"type": "transformer", "model": "htsat", "pretrained": True},
        "text_encoder_args": {"type": "bert-base-uncased"},
    }
    path = tmp_path_factory.mktemp("htsat") / "wavcaps_htsat.pt"
    torch.save({"model": state, "config": config_dict, "epoch": 1}, path)

    def oracle(waves: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            latent = encoder(logmel(spectrogram(waves))).pooler_output.double().numpy()
        return l2(mlp_np(proj, latent))

    return path, oracle


def test_htsat_equals_clap_audio_encoder(htsat):
    path, oracle = htsat
    audio, _, shared = load_joint(JointConfig(model=str(path)), Runtime(text=False))
    assert shared["settings"]["audio_architecture"] == "transformer:htsat"
    waves = 0.1 * torch.randn(2, 3 * SR, generator=torch.Generator().manual_seed(1))
    got, _ = audio.embed(waves.numpy())
    np.testing.assert_allclose(got, oracle(waves), atol=2e-5)
    assert audio.window == 1023 * 320  # 1024 frames, 10.23 s


def test_htsat_long_clips_use_windows(htsat):
    path, oracle = htsat
    audio, _, _ = load_joint(JointConfig(model=str(path)), Runtime(text=False))
    w = audio.window
    wave = 0.1 * torch.randn(1, w + SR, generator=torch.Generator().manual_seed(2))
    got, _ = audio.embed(wave.numpy())
    parts = oracle(torch.cat([wave[:, :w], wave[:, -w:]]))
    want = parts.mean(axis=0)
    np.testing.assert_allclose(got[0], want / np.linalg.norm(want), atol=2e-5)
