"""Settings of a joint-model extraction (`diffatr extract --joint-model PATH`).

Reads/writes nothing. `JointConfig` is part of `ExtractConfig` (so it is in every cache's
`extract_config` and in the resume manifest); `Runtime` is what a loader needs to know about
the run (device, precision, which sides and sequence features), filled in from `ExtractConfig`.
"""

from dataclasses import dataclass

LONG_CLIP_POLICY = "mean of the L2-normalised embeddings of consecutive windows, the last one "
LONG_CLIP_POLICY += "ending at the clip's end, then L2-normalised"


@dataclass(frozen=True)
class JointConfig:
    model: str = ""  # --joint-model: a WavCaps / audio-text_retrieval checkpoint or a CLAP model
    text_encoder: str | None = None  # tokenizer + config source; None = the checkpoint's own
    clean_captions: bool = True  # the model's own caption clean-up (WavCaps, Mei et al.)
    trust_checkpoint: bool = False  # --trust-checkpoint: allow a checkpoint that runs code


@dataclass(frozen=True)
class Runtime:
    """How the encoders run (not what they compute, except `precision`)."""

    audio: bool = True  # build the audio side
    text: bool = True  # build the text side
    audio_device: str = "cpu"
    text_device: str = "cpu"
    precision: str = "fp32"  # fp32 | bf16 | fp16 (CUDA)
    frames: bool = False  # return frame features (CNN kinds)
    tokens: bool = False  # return the text model's token states
