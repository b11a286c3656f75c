"""The diffatr cache format, version 1: names, types and the error raised for a bad cache.

One HDF5 file per dataset split, readable with plain h5py, rows in input order:

    /                      attrs: format="diffatr-cache", format_version=1, created (ISO 8601),
                                  diffatr_version, dataset, split, embedding_space
    /audio/ids             (Na,)  UTF-8 strings, unique clip ids (the file name)
    /audio/embeddings      (Na, Da) float32 | float16
    /audio/frames          (sum T_i, Df) optional ragged frame features, with
    /audio/frame_offsets   (Na + 1,) int64: clip i owns rows offsets[i]:offsets[i + 1]
    /text/captions         (Nt,)  UTF-8 strings
    /text/audio_index      (Nt,)  int64, row in /audio of the caption's clip; -1 = no known clip
                                  (a query-only caption, e.g. the DCASE retrieval_captions.csv)
    /text/embeddings       (Nt, Dt) float32 | float16
    /text/tokens           (sum L_j, Dl) optional ragged token features, with
    /text/token_offsets    (Nt + 1,) int64

Group attributes (`/audio`, `/text`) say how the features were made: encoder,
checkpoint_sha256, sample_rate (audio), feature_kind, settings (the full settings, JSON).
`embedding_space` is "joint" when audio and text live in one space (comparable by cosine) and
"backbone" when they are separate encoders' features (a phase-1 input).
"""

import numpy as np

from ..errors import UserError

FORMAT = "diffatr-cache"
FORMAT_VERSION = 1
ROOT_ATTRS = ("format", "format_version", "created", "diffatr_version", "dataset", "split")
SPACES = ("joint", "backbone")
EMBEDDING_DTYPES = ("float32", "float16")
PROVENANCE_ATTRS = {
    "audio": ("encoder", "checkpoint_sha256", "sample_rate", "feature_kind", "settings"),
    "text": ("encoder", "checkpoint_sha256", "feature_kind", "settings"),
}
# Per side: the name dataset, the embedding dataset, the optional ragged pair.
SIDES = {
    "audio": {
        "names": "ids",
        "embeddings": "embeddings",
        "seq": "frames",
        "offsets": "frame_offsets",
    },
    "text": {
        "names": "captions",
        "embeddings": "embeddings",
        "seq": "tokens",
        "offsets": "token_offsets",
    },
}
NO_CLIP = -1


def outside_clips(audio_index: np.ndarray, n_audio: int) -> np.ndarray:
    """Rows of captions whose audio_index is neither a clip row nor NO_CLIP."""
    return np.flatnonzero((audio_index < NO_CLIP) | (audio_index >= n_audio))


class CacheError(UserError):
    """A cache file is missing, unreadable or does not follow the format."""
