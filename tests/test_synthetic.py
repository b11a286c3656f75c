"""The synthetic default split: deterministic from its seed, and shaped like a real joint
space (caption counts, modality gap, hubs, varying norms, realistic recall)."""

import numpy as np
import pytest

from diffatr.cache import Cache, SyntheticConfig, make_synthetic
from diffatr.evaluate import EvalConfig, evaluate_cache


def _read_all(path):
    with Cache(path) as cache:
        return (
            cache.embeddings("audio")[:],
            cache.embeddings("text")[:],
            cache.audio_index(),
            cache.audio_ids(),
            cache.captions(),
        )


def test_synthetic_is_deterministic(tmp_path):
    cfg = SyntheticConfig(n_clips=40, dim=16, captions_per_clip=(1, 3, 5), seed=11)
    make_synthetic(tmp_path / "a.h5", cfg)
    make_synthetic(tmp_path / "b.h5", cfg)
    make_synthetic(tmp_path / "c.h5", SyntheticConfig(**{**cfg.__dict__, "seed": 12}))
    a, b, c = (_read_all(tmp_path / f"{n}.h5") for n in "abc")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a[0].shape == c[0].shape and not np.array_equal(a[0], c[0])
    assert a[2].tolist() != c[2].tolist()  # other caption counts
    assert a[4] != c[4]


def test_synthetic_caption_counts(tmp_path):
    make_synthetic(tmp_path / "s.h5", SyntheticConfig(n_clips=60, dim=8, captions_per_clip=(1, 7)))
    _, text, index, ids, captions = _read_all(tmp_path / "s.h5")
    per_clip = np.bincount(index, minlength=len(ids))
    assert set(per_clip.tolist()) == {1, 7}
    assert len(captions) == len(text) == per_clip.sum()
    assert (np.diff(index) >= 0).all()  # captions grouped by clip, in clip order


@pytest.fixture(scope="module")
def default_split(tmp_path_factory):
    path = tmp_path_factory.mktemp("syn") / "default.h5"
    make_synthetic(path)
    return path


def _unit(x):
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_synthetic_default_split_shape(default_split):
    audio, text, index, ids, _ = _read_all(default_split)
    assert audio.shape == (1000, 512) and text.shape == (5000, 512)
    assert audio.dtype == np.float32
    assert len(set(ids)) == 1000
    assert (np.bincount(index) == 5).all()


def test_synthetic_has_a_modality_gap(default_split):
    audio, text, index, _, _ = _read_all(default_split)
    a, t = _unit(audio), _unit(text)
    pair = float((a[index] * t).sum(axis=1).mean())
    ma, mt = a.mean(axis=0), t.mean(axis=0)
    centroid = float(ma @ mt / np.linalg.norm(ma) / np.linalg.norm(mt))
    # observed: centroid cosine about -0.9, matched pairs about +0.11
    assert pair > 0.05
    assert centroid < 0
    assert centroid < pair - 0.5


def test_synthetic_has_hubs(default_split):
    audio, text, _, _, _ = _read_all(default_split)
    top1 = (_unit(text) @ _unit(audio).T).argmax(axis=1)
    counts = np.bincount(top1, minlength=len(audio))
    assert counts.max() > 10 * counts.mean()  # observed: 302 vs 5


def test_synthetic_norms_vary(default_split):
    audio, _, _, _, _ = _read_all(default_split)
    norms = np.linalg.norm(audio, axis=1)
    assert norms.std() / norms.mean() > 0.1


def test_synthetic_recall_is_realistic(default_split):
    result = evaluate_cache(default_split, EvalConfig(device="cpu"))
    assert 15 <= result.metrics["t2a_R@1"] <= 50
    assert result.counts["clips"] == 1000 and result.counts["scored_captions"] == 5000
