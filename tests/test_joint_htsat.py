"""WavCaps HTSAT checkpoints mapped onto transformers' ClapAudioEncoder.

What each test checks, and against what:
- test_a_swin_block_equals_a_hand_written_htsat_block: the key mapping and the function, against
  an independent reference: one Swin block written here by hand from HTSAT's own names and
  formula (LayerNorm, fused qkv split as [q; k; v], scaled dot product plus the relative
  position bias, proj, residual, LayerNorm, fc1-GELU-fc2, residual), run on the HTSAT-named
  weights, against the ClapAudioEncoder block loaded through `to_clap_names`.
- test_htsat_equals_clap_audio_encoder: the whole pipeline (checkpoint reading, torchlibrosa
  front end, renaming, projection, normalisation) against ClapAudioEncoder run directly on the
  same weights. Its oracle is the same transformers module the extraction uses, so it does not
  test that ClapAudioEncoder computes HTSAT (the hand-written block does that for one block, and
  joint-models.md records the reading of their code); it tests that nothing between the
  checkpoint and that module changes the weights or the input (the inverse renaming below is
  written out independently of `to_clap_names`).
- test_htsat_long_clips_use_windows: clips over 10.23 s follow the window rule."""

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


def test_a_swin_block_equals_a_hand_written_htsat_block():
    from transformers import ClapAudioConfig
    from transformers.models.clap.modeling_clap import ClapAudioLayer

    from diffatr.extract.joint.htsat import to_clap_names

    ws, C, heads, B = 4, 8, 2, 3
    N, d = ws * ws, C // heads
    g = torch.Generator().manual_seed(11)

    def rand(*shape, scale=0.3):
        return scale * torch.randn(*shape, generator=g)

    yx = [(y, x) for y in range(ws) for x in range(ws)]  # token order: row-major in the window
    index = torch.tensor(
        [[(yi - yj + ws - 1) * (2 * ws - 1) + (xi - xj + ws - 1) for yj, xj in yx] for yi, xi in yx]
    )  # Swin's relative position index, (N, N)
    prefix = "layers.0.blocks.0."
    theirs = {  # HTSAT's names (their SwinTransformerBlock / WindowAttention)
        "norm1.weight": 1 + rand(C), "norm1.bias": rand(C),
        "attn.qkv.weight": rand(3 * C, C), "attn.qkv.bias": rand(3 * C),
        "attn.relative_position_bias_table": rand((2 * ws - 1) ** 2, heads),
        "attn.relative_position_index": index,
        "attn.proj.weight": rand(C, C), "attn.proj.bias": rand(C),
        "norm2.weight": 1 + rand(C), "norm2.bias": rand(C),
        "mlp.fc1.weight": rand(4 * C, C), "mlp.fc1.bias": rand(4 * C),
        "mlp.fc2.weight": rand(C, 4 * C), "mlp.fc2.bias": rand(C),
    }  # fmt: skip
    x = torch.randn(B, N, C, generator=g)  # one window of ws x ws tokens per clip

    def ln(t, w, b):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-5) * w + b

    w = theirs
    h = ln(x, w["norm1.weight"], w["norm1.bias"])
    qkv = (h @ w["attn.qkv.weight"].T + w["attn.qkv.bias"]).view(B, N, 3, heads, d)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, heads, N, d) each
    bias = w["attn.relative_position_bias_table"][index.view(-1)].view(N, N, heads)
    a = torch.softmax((q * d**-0.5) @ k.transpose(-1, -2) + bias.permute(2, 0, 1), dim=-1)
    o = (a @ v).transpose(1, 2).reshape(B, N, C) @ w["attn.proj.weight"].T + w["attn.proj.bias"]
    x1 = x + o
    m = ln(x1, w["norm2.weight"], w["norm2.bias"]) @ w["mlp.fc1.weight"].T + w["mlp.fc1.bias"]
    want = x1 + torch.nn.functional.gelu(m) @ w["mlp.fc2.weight"].T + w["mlp.fc2.bias"]

    config = ClapAudioConfig(window_size=ws, hidden_act="gelu")
    block = ClapAudioLayer(config, C, (ws, ws), heads).eval()
    mapped = to_clap_names({prefix + k: v for k, v in theirs.items()})
    block.load_state_dict({k[len(prefix) :]: v for k, v in mapped.items()}, strict=True)
    with torch.no_grad():
        got = block(x, (ws, ws))[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
