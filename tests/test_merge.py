"""`diffatr.cache.merge` against a naive oracle: every part loaded whole, concatenated by hand."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from diffatr.cache import CacheError, verify
from diffatr.cache.merge import merge
from diffatr.cache.writer import CacheWriter
from diffatr.cli import main

AUDIO_ATTRS = {"encoder": "cnn14", "feature_kind": "pre_fc1", "settings": {"hop": 320}}
WIDTH = {"audio": 5, "text": 4}
TEXT_ATTRS = {"encoder": "bert", "feature_kind": "cls", "settings": {"pooling": "cls"}}


def make_part(path, rng, n_clips, n_caps, *, prefix, seq=True, dtype="float32", **root):
    """A cache with random rows; some captions point to no clip (-1)."""
    with CacheWriter(path, dataset="d", split="s", space="backbone", dtype=dtype) as w:
        w.set_attrs("audio", sample_rate=32000, **AUDIO_ATTRS)
        w.set_attrs("text", **TEXT_ATTRS)
        if root:
            w.set_root_attrs(**root)
        frames = [rng.normal(size=(int(rng.integers(0, 4)), 3)) for _ in range(n_clips)]
        w.add_audio(
            [f"{prefix}{i}.wav" for i in range(n_clips)],
            rng.normal(size=(n_clips, 5)),
            frames if seq else None,
        )
        index = rng.integers(-1, n_clips, size=n_caps) if n_clips else np.full(n_caps, -1)
        tokens = [rng.normal(size=(int(rng.integers(1, 5)), 2)) for _ in range(n_caps)]
        w.add_text(
            [f"{prefix} caption {j}" for j in range(n_caps)],
            index,
            rng.normal(size=(n_caps, 4)),
            tokens if seq else None,
        )
    return path


def load(path) -> dict:
    """The naive reader: every array of a cache, ragged rows as lists."""
    with h5py.File(path) as f:
        out = {"attrs": dict(f.attrs)}
        for side, names, seq, off in (
            ("audio", "ids", "frames", "frame_offsets"),
            ("text", "captions", "tokens", "token_offsets"),
        ):
            g = f[side]
            if names not in g:  # a part with no rows: the group holds only attributes
                out.update({f"{side}_names": [], f"{side}_emb": np.zeros((0, WIDTH[side]))})
                out.update({f"{side}_seq": [], "audio_index": np.zeros(0, np.int64)})
                continue
            out[f"{side}_names"] = list(g[names].asstr()[:])
            out[f"{side}_emb"] = g["embeddings"][:]
            if seq in g:
                o = g[off][:]
                out[f"{side}_seq"] = [g[seq][o[i] : o[i + 1]] for i in range(len(o) - 1)]
        if "audio_index" in f["text"]:
            out["audio_index"] = f["text/audio_index"][:]
        out["audio_attrs"] = dict(f["audio"].attrs)
    return out


def oracle(paths) -> dict:
    parts = [load(p) for p in paths]
    out = {}
    for key in ("audio_names", "text_names", "audio_seq", "text_seq"):
        out[key] = [x for p in parts for x in p[key]]
    for key in ("audio_emb", "text_emb"):
        out[key] = np.concatenate([p[key] for p in parts])
    index, before = [], 0
    for p in parts:
        index += [i + before if i >= 0 else -1 for i in p["audio_index"]]
        before += len(p["audio_names"])
    out["audio_index"] = np.array(index)
    return out


@pytest.fixture
def parts(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [(3, 7), (0, 0), (5, 2), (1, 4)]  # one part with no rows at all
    return [
        make_part(tmp_path / f"p{k}.h5", rng, n, m, prefix=f"p{k}_")
        for k, (n, m) in enumerate(sizes)
    ]


@pytest.mark.parametrize("block_bytes", [1, 40, 1 << 20])
def test_merge_equals_the_concatenation_by_hand(parts, tmp_path, block_bytes):
    out = tmp_path / "merged.h5"
    result = merge(parts, out, block_bytes=block_bytes)
    assert (result.n_audio, result.n_text, result.parts) == (9, 13, 4)
    got, want = load(out), oracle(parts)
    assert got["audio_names"] == want["audio_names"]
    assert got["text_names"] == want["text_names"]
    np.testing.assert_array_equal(got["audio_index"], want["audio_index"])
    assert (got["audio_index"] == -1).sum() == (want["audio_index"] == -1).sum() > 0
    for key in ("audio_emb", "text_emb"):
        np.testing.assert_array_equal(got[key], want[key])
    for key in ("audio_seq", "text_seq"):
        assert len(got[key]) == len(want[key])
        for a, b in zip(got[key], want[key], strict=True):
            np.testing.assert_array_equal(a, b)
    assert got["audio_attrs"]["encoder"] == "cnn14"
    assert got["audio_attrs"]["sample_rate"] == 32000
    assert json.loads(got["audio_attrs"]["settings"]) == {"hop": 320}
    assert got["attrs"]["embedding_space"] == "backbone"
    assert verify(out).ok, verify(out).errors
    assert not list(tmp_path.glob("*.partial"))


def test_root_attributes_are_joined_summed_or_kept_per_part(tmp_path):
    rng = np.random.default_rng(1)
    a = make_part(
        tmp_path / "a.h5",
        rng,
        2,
        2,
        prefix="a",
        skipped_clips=json.dumps([{"clip_id": "x.wav", "reason": "empty"}]),
        skipped_captions=5,
        note="same",
        rank=0,
    )
    b = make_part(
        tmp_path / "b.h5",
        rng,
        2,
        2,
        prefix="b",
        skipped_clips=json.dumps([{"clip_id": "y.wav", "reason": "missing"}]),
        skipped_captions=2,
        note="same",
        rank=1,
    )
    with h5py.File(b, "r+") as f:
        f.attrs["dataset"] = "other"
    result = merge([a, b], tmp_path / "m.h5", split="test", attrs={"extra": "given"})
    attrs = load(tmp_path / "m.h5")["attrs"]
    assert [c["clip_id"] for c in json.loads(attrs["skipped_clips"])] == ["x.wav", "y.wav"]
    assert attrs["skipped_captions"] == 7
    assert attrs["dataset"] == "d+other" and attrs["split"] == "test"
    assert attrs["note"] == "same" and attrs["extra"] == "given"
    assert "rank" not in attrs
    assert json.loads(attrs["merged_from"]) == [
        {"part": "a.h5", "rank": 0},
        {"part": "b.h5", "rank": 1},
    ]
    assert result.attrs["skipped_captions"] == 7


def test_different_encoders_are_refused_and_nothing_is_written(tmp_path):
    rng = np.random.default_rng(2)
    a = make_part(tmp_path / "a.h5", rng, 2, 2, prefix="a")
    b = make_part(tmp_path / "b.h5", rng, 2, 2, prefix="b")
    with h5py.File(b, "r+") as f:
        f["audio"].attrs["encoder"] = "resnet38"
    out = tmp_path / "m.h5"
    with pytest.raises(CacheError, match=r"b\.h5: /audio attribute 'encoder' differs"):
        merge([a, b], out)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_duplicate_clips_groups_and_sequences_must_agree(tmp_path):
    rng = np.random.default_rng(3)
    a = make_part(tmp_path / "a.h5", rng, 2, 2, prefix="a")
    again = make_part(tmp_path / "again.h5", rng, 2, 2, prefix="a")
    with pytest.raises(CacheError, match="appears twice"):
        merge([a, again], tmp_path / "m.h5")
    plain = make_part(tmp_path / "plain.h5", rng, 2, 2, prefix="c", seq=False)
    with pytest.raises(CacheError, match=r"plain\.h5: has no /audio/frames"):
        merge([a, plain], tmp_path / "m.h5")
    with CacheWriter(tmp_path / "audio.h5", dataset="d", split="s", space="backbone") as w:
        w.set_attrs("audio", **AUDIO_ATTRS)
        w.add_audio(["z.wav"], np.ones((1, 5)))
    with pytest.raises(CacheError, match=r"holds /audio but .*a\.h5 holds /audio and /text"):
        merge([a, tmp_path / "audio.h5"], tmp_path / "m.h5")
    with pytest.raises(CacheError, match="is also one of the parts"):
        merge([a], a)
    with pytest.raises(CacheError, match="already exists"):
        merge([a], plain)


def test_float16_parts_stay_float16_and_mixed_parts_become_float32(tmp_path):
    rng = np.random.default_rng(4)
    h1 = make_part(tmp_path / "h1.h5", rng, 2, 1, prefix="h1", dtype="float16")
    h2 = make_part(tmp_path / "h2.h5", rng, 2, 1, prefix="h2", dtype="float16")
    f = make_part(tmp_path / "f.h5", rng, 2, 1, prefix="f")
    merge([h1, h2], tmp_path / "half.h5")
    merge([h1, f], tmp_path / "mixed.h5")
    assert load(tmp_path / "half.h5")["audio_emb"].dtype == np.float16
    mixed = load(tmp_path / "mixed.h5")
    assert mixed["audio_emb"].dtype == np.float32
    np.testing.assert_array_equal(mixed["audio_emb"], oracle([h1, f])["audio_emb"])


def test_cache_merge_command(parts, tmp_path):
    out = tmp_path / "cli.h5"
    args = ["cache", "merge", *map(str, parts), "--out", str(out), "--split", "test"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "9 clips, 13 captions from 4 parts" in result.output
    assert load(out)["attrs"]["split"] == "test"
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already exists" in again.output
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0
