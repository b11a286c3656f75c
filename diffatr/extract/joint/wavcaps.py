"""WavCaps retrieval checkpoints (Mei et al., `retrieval/` of the WavCaps code): their `ASE`
model, built from the checkpoint's own `config`.

Reads: the loaded checkpoint `{"model": state_dict, "config": config, "epoch": n}` (keys
`audio_encoder.audio_enc.*`, `text_encoder.text_encoder.*`, `audio_proj.{0,2}`,
`text_proj.{0,2}`, `temp`), and the text model's tokenizer and config (local only). Writes nothing.

    audio: a = normalize(audio_proj(encoder(wave)))   CNN: max_t + mean_t of the last block
           (2048-d); HTSAT: its 768-d latent (`htsat.py`)
    text:  e = normalize(text_proj(h[:, 0])), tokenizer(padding longest, truncation, 30 tokens)
Captions are cleaned as their `text_preprocess` does (`captions.clean_wavcaps`).
"""

import json

from ...device import resolve_device
from ...errors import UserError
from .audio import CnnJointAudio, check_precision
from .captions import CLEANUPS
from .cnn import MelSettings, load_cnn
from .config import JointConfig, Runtime
from .text import (
    JointTextEncoder,
    build_text_model,
    first_token_forward,
    load_tokenizer_and_config,
    projection,
    text_limit,
)

MAX_TOKENS = 30  # their tokenizer call: truncation=True, max_length=30
_CNN_MODELS = {"cnn14": "cnn14", "resnet38": "resnet38", "cnn10": "cnn10"}
AUDIO_PREFIX, TEXT_PREFIX = "audio_encoder.audio_enc.", "text_encoder.text_encoder."


def _config(blob: dict, where: str) -> dict:
    config = blob.get("config")
    if not isinstance(config, dict):
        raise UserError(f"{where}: a WavCaps checkpoint without its 'config' dict")
    for key in ("audio_args", "audio_encoder_args", "text_encoder_args"):
        if not isinstance(config.get(key), dict):
            raise UserError(f"{where}: its config has no {key!r} section")
    return config


def mel_settings(audio_args: dict, where: str) -> MelSettings:
    """The log-mel front end from the config's `audio_args`."""
    try:
        return MelSettings(
            sample_rate=int(audio_args["sr"]),
            n_fft=int(audio_args["n_fft"]),
            hop_length=int(audio_args["hop_length"]),
            n_mels=int(audio_args["n_mels"]),
            f_min=float(audio_args["f_min"]),
            f_max=float(audio_args["f_max"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where}: config audio_args lacks a usable {e}") from None


def split_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def plain(value):
    """A JSON-safe copy of a value read from a checkpoint (numpy or tensor scalars -> str)."""
    return json.loads(json.dumps(value, default=str))


def model_config_json(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def load_wavcaps(
    path: str, blob: dict, cfg: JointConfig, rt: Runtime, sha256: str
) -> tuple[object | None, JointTextEncoder | None, dict]:
    """(audio encoder | None, text encoder | None, provenance settings shared by both)."""
    config = _config(blob, path)
    state = blob["model"]
    args = config["audio_encoder_args"]
    kind = str(args.get("type", "")).lower()
    model = str(args.get("model", "")).lower()
    text_name = cfg.text_encoder or config["text_encoder_args"].get("type")
    if not isinstance(text_name, str) or not text_name:
        raise UserError(f"{path}: its config names no text model (text_encoder_args.type)")
    shared = {
        "joint_model": cfg.model,
        "joint_kind": "wavcaps",
        "text_encoder": text_name,
        "model_config": model_config_json(config),
        "embed_size": plain(config.get("embed_size")),
        "epoch": plain(blob.get("epoch")),
        "audio_architecture": f"{kind}:{model}",
    }
    provenance = {"encoder": "joint:wavcaps", "feature_kind": "joint", "checkpoint_sha256": sha256}
    audio = None
    if rt.audio:
        audio_state = split_state(state, AUDIO_PREFIX)
        proj = projection(state, "audio_proj", path)
        if kind == "cnn" and model in _CNN_MODELS:
            mel = mel_settings(config["audio_args"], path)
            cnn = load_cnn(audio_state, mel, path, expect=_CNN_MODELS[model])
            _check_chain(cnn.width, proj, "audio_proj", path)
            audio = CnnJointAudio(
                cnn,
                proj,
                device=rt.audio_device,
                precision=rt.precision,
                frames=rt.frames,
                provenance={**provenance, "settings": {**shared, **vars(mel)}},
            )
        elif kind == "transformer" and model == "htsat":
            from .htsat import load_htsat_audio

            mel = mel_settings(config["audio_args"], path)
            audio = load_htsat_audio(audio_state, proj, mel, path, rt, {**provenance}, shared)
        else:
            raise UserError(
                f"{path}: audio encoder {args.get('type')!r}/{args.get('model')!r} is not one we "
                "have (cnn: Cnn14, ResNet38; transformer: htsat)"
            )
    text = None
    if rt.text:
        text = load_bert_side(
            path,
            state,
            TEXT_PREFIX,
            "text_proj",
            text_name,
            cfg,
            rt,
            cleanup="wavcaps",
            cap=MAX_TOKENS,
        )
    return audio, text, {**provenance, "settings": shared}


def _check_chain(width: int, proj, name: str, where: str) -> None:
    if proj[0].in_features != width:
        raise UserError(
            f"{where}: {name} takes {proj[0].in_features}-d input but the encoder gives {width}-d"
        )


def load_bert_side(
    path: str,
    state: dict,
    prefix: str,
    proj_name: str,
    text_name: str,
    cfg: JointConfig,
    rt: Runtime,
    *,
    cleanup: str,
    cap: int | None,
) -> JointTextEncoder:
    """Mei et al.'s text side: a BERT-family model from `prefix`, then `proj_name`."""
    tokenizer, config = load_tokenizer_and_config(text_name, path, cfg.text_encoder is not None)
    model = build_text_model(config, split_state(state, prefix), path)
    proj = projection(state, proj_name, path)
    _check_chain(int(config.hidden_size), proj, proj_name, path)
    device = resolve_device(rt.text_device)
    check_precision(rt.precision, device)
    model, proj = model.to(device), proj.to(device)
    return JointTextEncoder(
        tokenizer,
        first_token_forward(model, proj),
        dim=int(proj[-1].out_features),
        token_dim=int(config.hidden_size),
        cleanup=CLEANUPS[cleanup] if cfg.clean_captions else None,
        max_length=text_limit(tokenizer, config, cap),
        device=device,
        precision=rt.precision,
        cleanup_name=cleanup,
    )
