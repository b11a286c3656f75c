"""A deterministic synthetic split of *backbone* features: the input of phase 1 for the demo,
the tests and the benchmarks. Reads nothing; writes one cache (`embedding_space="backbone"`).

Both "encoders" see one hidden latent and map it into their own spaces, so audio and text are
not comparable by cosine (the widths differ) until phase 1 learns projections into one space:
- latent: sound classes are unit directions in R^L (long-tailed frequencies, as in AudioCaps);
  a clip's latent z_i is its class direction plus clip noise (`class_spread`);
- audio (CNN14 pre-fc1-like, `audio_dim` wide): relu(W_a (z_i + audio noise) + b_a) plus a
  little feature noise, non-negative as a max+mean of ReLU activations is;
- text (BERT-[CLS]-like, `text_dim` wide): W_t (z_i + shared + own caption noise) + a large
  common offset (the anisotropy of BERT's [CLS] vectors) plus feature noise; the several
  captions of a clip share part of their noise and disagree in the rest;
- sequences (off by default): each clip's frames are noisy copies of its audio vector before
  the ReLU, each caption's tokens noisy copies of its text vector (no alignment structure).
The class directions, W_a, b_a, W_t and the offset come from `map_seed` only, so every split
made with one `map_seed` (train, val and test, each with its own `seed`) shares one pair of
"encoders", and a projection trained on one split applies to the others.
Same config, same bytes: the split's clips, captions and noise come from `seed`.
"""

import os
from dataclasses import asdict, dataclass

import numpy as np

from .synthetic import _PLACES, class_name
from .writer import CacheWriter

_CHUNK = 512  # clips generated at once: with frames, 512 x 16 x 2048 float32 = 64 MiB


@dataclass(frozen=True)
class BackboneSyntheticConfig:
    n_clips: int = 1000  # clips in the split
    captions_per_clip: tuple[int, ...] = (5,)  # each clip draws its caption count from these
    audio_dim: int = 2048  # Da: CNN14's pre-fc1 clip vector
    text_dim: int = 768  # Dt: BERT-base's [CLS] vector (384 for MiniLM)
    latent_dim: int = 32  # L: the hidden space both encoders see, what phase 1 must recover
    n_classes: int = 48  # sound classes (clusters in the latent)
    class_spread: float = 0.7  # clip latent = class direction + this much clip noise
    audio_noise: float = 0.4  # what the audio encoder gets wrong, in the latent
    shared_caption_noise: float = 1.0  # what all captions of a clip get wrong together
    caption_noise: float = 0.8  # what each caption gets wrong on its own
    feature_noise: float = 0.5  # per-coordinate noise of both encoders' outputs (signal ~1)
    text_offset: float = 1.5  # size of the common [CLS] component, relative to the signal
    sequences: bool = False  # also write /audio/frames and /text/tokens (ragged)
    frames_per_clip: tuple[int, int] = (8, 16)  # T_i drawn uniformly from [low, high]
    tokens_per_caption: tuple[int, int] = (6, 14)  # L_j drawn uniformly from [low, high]
    sequence_noise: float = 0.5  # per-coordinate noise of a frame or token around its vector
    seed: int = 0  # this split's clips, captions and noise
    map_seed: int = 0  # classes and encoder maps: keep it equal across one dataset's splits

    def check(self) -> None:
        if self.n_clips < 1 or not self.captions_per_clip or min(self.captions_per_clip) < 0:
            raise ValueError("need at least one clip and non-negative caption counts")
        if min(self.audio_dim, self.text_dim, self.latent_dim, self.n_classes) < 1:
            raise ValueError("dims and the number of classes must be positive")
        for low, high in (self.frames_per_clip, self.tokens_per_caption):
            if not 1 <= low <= high:
                raise ValueError(f"sequence lengths need 1 <= low <= high, got ({low}, {high})")


@dataclass(frozen=True)
class _Encoders:
    """What `map_seed` fixes: the latent classes and both encoders' maps."""

    centres: np.ndarray  # (C, L) unit class directions
    prior: np.ndarray  # (C,) class frequencies
    W_a: np.ndarray  # (L, Da)
    b_a: np.ndarray  # (Da,)
    W_t: np.ndarray  # (L, Dt)
    offset: np.ndarray  # (Dt,)


def _encoders(cfg: BackboneSyntheticConfig) -> _Encoders:
    rng = np.random.default_rng([cfg.map_seed, 0xBAC0])  # never the split's stream
    L = cfg.latent_dim
    centres = _unit(rng.standard_normal((cfg.n_classes, L)))
    prior = 1.0 / np.sqrt(np.arange(1, cfg.n_classes + 1))
    # unit-norm latents give ~N(0, 1) coordinates after W; the bias keeps ~70% of ReLUs on
    return _Encoders(
        centres=centres,
        prior=prior / prior.sum(),
        W_a=rng.standard_normal((L, cfg.audio_dim)).astype(np.float32),
        b_a=(0.5 + 0.2 * rng.standard_normal(cfg.audio_dim)).astype(np.float32),
        W_t=rng.standard_normal((L, cfg.text_dim)).astype(np.float32),
        offset=(cfg.text_offset * rng.standard_normal(cfg.text_dim)).astype(np.float32),
    )


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _noise(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Isotropic Gaussian rows of expected norm ~1."""
    return rng.standard_normal((n, dim)) / np.sqrt(dim)


def _copies(rng, vectors: np.ndarray, lengths: np.ndarray, scale: float) -> list[np.ndarray]:
    """For each row i, lengths[i] noisy copies of vectors[i]: [(lengths[i], D)] float32."""
    if not len(lengths):
        return []
    rows = np.repeat(vectors, lengths, axis=0)  # (sum lengths, D)
    rows += scale * rng.standard_normal(rows.shape, dtype=np.float32)
    return np.split(rows, np.cumsum(lengths)[:-1])


def make_synthetic_backbone(
    path: str | os.PathLike,
    cfg: BackboneSyntheticConfig = BackboneSyntheticConfig(),
    *,
    dataset: str = "synthetic",
    split: str = "train",
    overwrite: bool = False,
) -> None:
    """Write the synthetic backbone-feature split described by `cfg` to `path` (format v1)."""
    cfg.check()
    enc = _encoders(cfg)
    rng = np.random.default_rng(cfg.seed)
    counts = rng.choice(np.asarray(cfg.captions_per_clip), size=cfg.n_clips)
    classes = rng.choice(cfg.n_classes, size=cfg.n_clips, p=enc.prior)
    settings = {
        **asdict(cfg),
        "captions_per_clip": list(cfg.captions_per_clip),
        "frames_per_clip": list(cfg.frames_per_clip),
        "tokens_per_caption": list(cfg.tokens_per_caption),
    }
    L = cfg.latent_dim
    with CacheWriter(
        path, dataset=dataset, split=split, space="backbone", overwrite=overwrite
    ) as w:
        for side, encoder, kind in (("audio", "cnn14", "pre_fc1"), ("text", "bert", "cls")):
            w.set_attrs(
                side,
                encoder=f"synthetic-{encoder}",
                feature_kind=f"synthetic-{kind}",
                settings=settings,
                sample_rate=0 if side == "audio" else None,
            )
        for start in range(0, cfg.n_clips, _CHUNK):
            rows = np.arange(start, min(cfg.n_clips, start + _CHUNK))
            n = len(rows)
            z = _unit(enc.centres[classes[rows]] + cfg.class_spread * _noise(rng, n, L))  # (n, L)
            pre = (z + cfg.audio_noise * _noise(rng, n, L)).astype(np.float32) @ enc.W_a + enc.b_a
            pre += cfg.feature_noise * rng.standard_normal(pre.shape, dtype=np.float32)
            audio = np.maximum(pre, 0.0)  # (n, Da)
            clip_of = np.repeat(rows, counts[rows])  # (m,) the chunk's captions' clips
            m = len(clip_of)
            shared = cfg.shared_caption_noise * _noise(rng, n, L)
            latent = z[clip_of - start] + shared[clip_of - start]
            latent += cfg.caption_noise * _noise(rng, m, L)
            text = latent.astype(np.float32) @ enc.W_t + enc.offset  # (m, Dt)
            text += cfg.feature_noise * rng.standard_normal(text.shape, dtype=np.float32)
            frames = tokens = None
            if cfg.sequences:
                lo, hi = cfg.frames_per_clip
                frames = [
                    np.maximum(f, 0.0)
                    for f in _copies(rng, pre, rng.integers(lo, hi + 1, n), cfg.sequence_noise)
                ]
                lo, hi = cfg.tokens_per_caption
                tokens = _copies(rng, text, rng.integers(lo, hi + 1, m), cfg.sequence_noise)
            w.add_audio([f"{split}_{i:06d}.wav" for i in rows], audio, frames)
            captions = [
                class_name(classes[i]) + _PLACES[rng.integers(len(_PLACES))] for i in clip_of
            ]
            w.add_text(captions, clip_of, text, tokens)
