"""The caption clean-up each joint model's own code applied in training, as pure functions.

Reads/writes nothing. Both of Mei et al.'s codebases lower-case a caption, drop a space left
before punctuation, then turn punctuation into spaces; they differ in which characters count as
punctuation (joint-models.md). CLAP's processor uses captions as written. Each double space is
collapsed once per step (`str.replace("  ", " ")`, as theirs do: a triple space keeps two).
"""

import re

_SPACE_BEFORE_PUNCT = re.compile(r'\s([,.!?;:"](?:\s|$))')
_WAVCAPS_PUNCT = re.compile(r'[(,.!?;:|*")]')  # retrieval/data_handling/text_transform.py
_ATR_PUNCT = re.compile(r'[,.!?;:"]')  # audio-text_retrieval tools/dataset.py


def _clean(caption: str, punctuation: re.Pattern) -> str:
    text = caption.lower()
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text).replace("  ", " ")
    return punctuation.sub(" ", text).replace("  ", " ")


def clean_wavcaps(caption: str) -> str:
    """WavCaps retrieval's `text_preprocess`: lower case, `( , . ! ? ; : | * " )` -> spaces."""
    return _clean(caption, _WAVCAPS_PUNCT)


def clean_audio_text_retrieval(caption: str) -> str:
    """audio-text_retrieval's caption preparation: lower case, `, . ! ? ; : "` -> spaces."""
    return _clean(caption, _ATR_PUNCT)


CLEANUPS = {
    "wavcaps": clean_wavcaps,
    "audio_text_retrieval": clean_audio_text_retrieval,
    "none": str,
}
