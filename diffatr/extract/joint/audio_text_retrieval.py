"""audio-text_retrieval checkpoints (Mei et al. 2022, the phase 1 DiffATR follows): no config
in the file, so the architecture and widths are read from the key names and shapes.

Reads: the loaded checkpoint `{"model", "optimizer", "epoch"}` with keys `audio_enc.audio_enc.*`
(Cnn10 / Cnn14 / ResNet38 with their spectrogram and log-mel buffers; an unused `fc1`),
`audio_linear.{0,2}`, `text_enc.bert_encoder.*`, `text_linear.{0,2}`; the text model's tokenizer
and config (local only; name from --text-encoder, default bert-base-uncased). Writes nothing.

    audio: a = normalize(audio_linear(max_t h + mean_t h))
    text:  e = normalize(text_linear(h[:, 0])), tokenizer(padding=True), no length limit in
           their code (we stop at the model's position limit)
The front end: n_fft from the STFT kernels' shape, mel bins from the filter bank's; sample rate
32 kHz and hop 320 are their settings' (not in the file); the filter bank itself is loaded.
Known difference: their data preparation zero-pads AudioCaps clips to 10 s and pads Clotho clips
to the longest clip of a batch; here every clip is encoded alone at its own length (as WavCaps
does), so AudioCaps clips shorter than 10 s give other vectors than their evaluation did.
"""

from ...errors import UserError
from .audio import CnnJointAudio
from .cnn import MelSettings, load_cnn
from .config import JointConfig, Runtime
from .text import JointTextEncoder
from .wavcaps import _check_chain, load_bert_side, plain, projection, split_state

DEFAULT_TEXT_MODEL = "bert-base-uncased"  # their settings.yaml
AUDIO_PREFIX, TEXT_PREFIX = "audio_enc.audio_enc.", "text_enc.bert_encoder."
SAMPLE_RATE, HOP_LENGTH = 32000, 320  # settings.yaml `wav`; f_min/f_max 50/14000 in their code


def mel_from_buffers(audio_state: dict, where: str) -> MelSettings:
    try:
        kernel = audio_state["spectrogram_extractor.stft.conv_real.weight"]  # (n_fft/2+1, 1, n_fft)
        mel_w = audio_state["logmel_extractor.melW"]  # (n_fft/2+1, n_mels)
    except KeyError as e:
        raise UserError(f"{where}: no {AUDIO_PREFIX}{e.args[0]} (the log-mel front end)") from None
    return MelSettings(
        sample_rate=SAMPLE_RATE,
        n_fft=int(kernel.shape[-1]),
        hop_length=HOP_LENGTH,
        n_mels=int(mel_w.shape[1]),
    )


def load_audio_text_retrieval(
    path: str, blob: dict, cfg: JointConfig, rt: Runtime, sha256: str
) -> tuple[object | None, JointTextEncoder | None, dict]:
    """(audio encoder | None, text encoder | None, provenance shared by both)."""
    state = blob["model"]
    text_name = cfg.text_encoder or DEFAULT_TEXT_MODEL
    audio_state = split_state(state, AUDIO_PREFIX)
    mel = mel_from_buffers(audio_state, path)
    shared = {
        "joint_model": cfg.model,
        "joint_kind": "audio_text_retrieval",
        "text_encoder": text_name,
        "epoch": plain(blob.get("epoch")),
    }
    provenance = {
        "encoder": "joint:audio_text_retrieval",
        "feature_kind": "joint",
        "checkpoint_sha256": sha256,
    }
    audio = None
    if rt.audio:
        cnn = load_cnn(audio_state, mel, path)
        proj = projection(state, "audio_linear", path)
        _check_chain(cnn.width, proj, "audio_linear", path)
        shared["audio_architecture"] = cnn.arch
        audio = CnnJointAudio(
            cnn,
            proj,
            device=rt.audio_device,
            precision=rt.precision,
            frames=rt.frames,
            provenance={**provenance, "settings": {**shared, **vars(mel)}},
        )
    text = None
    if rt.text:
        text = load_bert_side(
            path,
            state,
            TEXT_PREFIX,
            "text_linear",
            text_name,
            cfg,
            rt,
            cleanup="audio_text_retrieval",
            cap=None,
        )
    return audio, text, {**provenance, "settings": shared}
