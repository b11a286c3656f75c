"""Extraction: a caption file and its audio folder -> an embedding cache (format v1), through
frozen PANNs audio encoders and Hugging Face text encoders; resumable and distributed.

Modules: `audio_io` (decoding), `panns`/`resnet38` (audio encoders), `captions` (caption files),
`text` (text encoder), `batching` (equal-length batches), `parts` (one chunk -> one part
cache), `resume` (the work folder), `distributed` (torchrun ranks), `run` (the pipeline);
`joint/`: contrastively trained audio-text models (WavCaps, audio-text_retrieval, CLAP) ->
joint-space caches (`--joint-model`).
"""

from .audio_io import SAMPLE_RATE, BadClip, ClipDataset, load_audio
from .captions import CAPTION_FORMATS, CaptionTable, ClipEntry, read_captions
from .panns import AUDIO_ENCODERS, AUDIO_FEATURES, PRECISIONS, AudioEncoder, AudioEncoderConfig
from .run import ExtractConfig, ExtractSummary, default_encoders, extract, guess_names
from .text import POOLINGS, TextEncoder, TextEncoderConfig

__all__ = [
    "AUDIO_ENCODERS",
    "AUDIO_FEATURES",
    "CAPTION_FORMATS",
    "POOLINGS",
    "PRECISIONS",
    "SAMPLE_RATE",
    "AudioEncoder",
    "AudioEncoderConfig",
    "BadClip",
    "CaptionTable",
    "ClipDataset",
    "ClipEntry",
    "ExtractConfig",
    "ExtractSummary",
    "TextEncoder",
    "TextEncoderConfig",
    "default_encoders",
    "extract",
    "guess_names",
    "load_audio",
    "read_captions",
]
