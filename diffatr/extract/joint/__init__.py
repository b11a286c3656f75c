"""Joint-space extraction from contrastively trained audio-text models: WavCaps retrieval
checkpoints, Mei et al.'s audio-text_retrieval checkpoints and CLAP models in `transformers`
format (`diffatr extract --joint-model PATH`).

Reads: the model (recognised from its content by `diffatr.checkpoint_kinds`), its text model's
tokenizer and config (local only). Writes nothing; the pipeline (`run.py`) writes the cache.

Modules: `config` (settings), `cnn` (Mei's Cnn10/Cnn14/ResNet38), `htsat` (HTSAT as
transformers' ClapAudioEncoder), `audio` (CNN audio side), `text` (text side), `captions`
(caption clean-ups), one loader per kind: `wavcaps`, `audio_text_retrieval`, `clap`.

Public:
    load_joint_text_encoder(path, text_encoder=None, device="cpu", clean_captions=True,
                            trust=False)
        -> an object whose `.encode(captions) -> (n, E)` float32 L2-normalised tensor is exactly
        what the extraction stores for those captions.
    joint_encoders(cfg: ExtractConfig) -> (audio encoder | None, text encoder | None), the
        extraction pipeline's encoder factory for `cfg.joint.model`.
"""

from pathlib import Path

from ...checkpoint_kinds import recognise_joint
from ...checkpoints import file_sha256
from .config import LONG_CLIP_POLICY, JointConfig, Runtime
from .text import JointTextEncoder

__all__ = [
    "LONG_CLIP_POLICY",
    "JointConfig",
    "JointTextEncoder",
    "Runtime",
    "joint_encoders",
    "load_joint",
    "load_joint_text_encoder",
]


def load_joint(cfg: JointConfig, rt: Runtime) -> tuple:
    """(audio encoder | None, JointTextEncoder | None, provenance) of the joint model
    `cfg.model`, recognised from its content; each refusal is one UserError line."""
    rec = recognise_joint(cfg.model, cfg.trust_checkpoint)
    if rec.kind == "clap":
        from .clap import load_clap

        return load_clap(rec, cfg, rt)
    sha256 = file_sha256(Path(cfg.model))
    if rec.kind == "wavcaps":
        from .wavcaps import load_wavcaps

        return load_wavcaps(cfg.model, rec.blob, cfg, rt, sha256)
    from .audio_text_retrieval import load_audio_text_retrieval

    return load_audio_text_retrieval(cfg.model, rec.blob, cfg, rt, sha256)


def load_joint_text_encoder(
    path: str,
    text_encoder: str | None = None,
    device: str = "cpu",
    clean_captions: bool = True,
    trust: bool = False,
) -> JointTextEncoder:
    """The text side of the joint model at `path`, for queries: `.encode(captions)` gives the
    (n, E) float32 L2-normalised vectors the extraction stores (same clean-up, tokenizer
    settings, pooling and projection), on CPU. `trust`: --trust-checkpoint."""
    cfg = JointConfig(
        model=str(path),
        text_encoder=text_encoder,
        clean_captions=clean_captions,
        trust_checkpoint=trust,
    )
    _, text, _ = load_joint(cfg, Runtime(audio=False, text=True, text_device=device))
    return text


def text_provenance(text: JointTextEncoder, shared: dict, cfg: JointConfig) -> dict:
    settings = {
        **shared["settings"],
        "clean_captions": cfg.clean_captions,
        "caption_cleanup": text.cleanup_name,
        "captions_stored": "as written (the clean-up applies to the encoder input only)",
    }
    settings.pop("audio_architecture", None)
    return {**shared, "settings": settings}


def joint_encoders(cfg) -> tuple:
    """The extraction pipeline's encoders for `cfg.joint.model` (`cfg`: an ExtractConfig)."""
    from .audio import PipelineText

    rt = Runtime(
        audio=not cfg.text_only,
        text=not cfg.audio_only,
        audio_device=cfg.audio.device,
        text_device=cfg.text.device,
        precision=cfg.audio.precision,
        frames=cfg.audio.frames,
        tokens=cfg.text.tokens,
    )
    audio, text, shared = load_joint(cfg.joint, rt)
    if text is not None:
        text = PipelineText(text, text_provenance(text, shared, cfg.joint), rt.tokens)
    return audio, text
