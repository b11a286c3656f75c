"""The synthetic split where only word-to-frame alignment separates a clip from its confusers."""

import itertools

import numpy as np
import pytest

from diffatr.cache import Cache, SequenceSyntheticConfig, make_synthetic_sequences, verify

QUIET = dict(
    frame_noise=0.0,
    token_noise=0.0,
    joint_noise=0.0,
    frames_per_event=(3, 3),
    silence_frames=(0, 0),
)


def read(path):
    with Cache(path) as cache:
        index = cache.audio_index()
        frames = [cache.sequence("audio", i) for i in range(cache.n_audio)]
        tokens = [cache.sequence("text", j) for j in range(cache.n_text)]
        audio, text = cache.embeddings("audio")[:], cache.embeddings("text")[:]
        return index, frames, tokens, audio, text, cache.captions(), cache.attrs


def test_a_valid_deterministic_cache(tmp_path) -> None:
    cfg = SequenceSyntheticConfig(n_bags=7, events_per_clip=3, captions_per_clip=2)
    make_synthetic_sequences(tmp_path / "a.h5", cfg)
    make_synthetic_sequences(tmp_path / "b.h5", cfg)
    assert verify(tmp_path / "a.h5").ok
    a, b = read(tmp_path / "a.h5"), read(tmp_path / "b.h5")
    for x, y in zip(a[:5], b[:5], strict=True):
        join = np.concatenate if isinstance(x, list) else np.asarray
        np.testing.assert_array_equal(join(x), join(y))
    assert a[5] == b[5]
    _, frames, tokens, audio, _, captions, attrs = a
    assert len(frames) == 7 * 6 and len(tokens) == 7 * 6 * 2  # m! = 6 clips a bag
    assert attrs["embedding_space"] == "joint"
    assert all(t.shape == (1 + 3 * 2 + 2 + 1, cfg.token_dim) for t in tokens)
    assert captions[0].count(" and ") == 2
    other = SequenceSyntheticConfig(n_bags=7, events_per_clip=3, seed=1)
    make_synthetic_sequences(tmp_path / "c.h5", other)
    assert not np.array_equal(read(tmp_path / "c.h5")[3], audio)


def test_pooled_features_cannot_tell_bindings_apart_but_frames_can(tmp_path) -> None:
    """Without noise: the clips of one bag have identical embeddings and identical mean
    frames and mean tokens, yet different frames (the events carry different attributes)."""
    m = 2
    make_synthetic_sequences(tmp_path / "q.h5", SequenceSyntheticConfig(n_bags=5, **QUIET))
    index, frames, tokens, audio, text, captions, _ = read(tmp_path / "q.h5")
    n_bind = len(list(itertools.permutations(range(m))))
    for bag in range(5):
        clips = range(bag * n_bind, (bag + 1) * n_bind)
        caps = [j for j in range(len(index)) if index[j] in clips]
        for c in clips:
            np.testing.assert_allclose(audio[c], audio[clips[0]], atol=1e-6)
            np.testing.assert_allclose(frames[c].mean(0), frames[clips[0]].mean(0), atol=1e-6)
        for j in caps:
            np.testing.assert_allclose(text[j], text[caps[0]], atol=1e-6)
            np.testing.assert_allclose(tokens[j].mean(0), tokens[caps[0]].mean(0), atol=1e-6)
        distinct = {tuple(np.unique(frames[c].round(4), axis=0).ravel()) for c in clips}
        assert len(distinct) == n_bind  # but the frames themselves differ
        assert len({captions[j] for j in caps}) >= n_bind  # and so do the captions


@pytest.mark.parametrize(
    "bad",
    [
        dict(events_per_clip=7),
        dict(n_bags=10_000),
        dict(frames_per_event=(0, 2)),
        dict(n_events=20),
        dict(captions_per_clip=0),
    ],
)
def test_impossible_settings_are_refused(tmp_path, bad) -> None:
    with pytest.raises(ValueError):
        make_synthetic_sequences(tmp_path / "x.h5", SequenceSyntheticConfig(**bad))
