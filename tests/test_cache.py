"""Cache format v1: the writer (atomic, chunked, checked) and the reader (lazy rows, tensors,
fork safety), read back with diffatr and with plain h5py."""

import datetime
import json
import multiprocessing
import os

import h5py
import numpy as np
import pytest
import torch

from diffatr.cache import (
    Cache,
    CacheError,
    CacheWriter,
    Rows,
    load_tensors,
)

IDS = ["a.wav", "dir/b, c.wav", 'say "x".wav', "ü – 日本.flac"]
CAPTIONS = [
    "a dog barks, then a car passes",
    'someone says "hello"',
    "two lines\nof caption",
    "café – 日本",
    "",
    "tab\tinside",
]
INDEX = [0, 1, 1, 3, 2, -1]


def _emb(n, d, seed):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _writer(path, **kwargs):
    kwargs = {"dataset": "unit", "split": "test", "space": "joint", **kwargs}
    return CacheWriter(path, **kwargs)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


# -- round trip --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    path = tmp_path_factory.mktemp("rt") / "rt.h5"
    audio, text = _emb(4, 6, 1), _emb(6, 6, 2)
    settings = {"sr": 32000, "layers": [1, 2], "name": "café"}
    with _writer(path, dataset="clotho", split="evaluation") as w:
        w.set_attrs(
            "audio",
            encoder="cnn14",
            feature_kind="pre_fc1",
            settings=settings,
            checkpoint_sha256="ab" * 32,
            sample_rate=32000,
        )
        w.set_attrs("text", encoder="bert", feature_kind="cls", settings={"max_len": 30})
        w.add_audio(IDS, audio)
        w.add_text(CAPTIONS, INDEX, torch.from_numpy(text))
    return path, audio, text, settings


def test_round_trip_through_the_reader(round_trip):
    path, audio, text, _ = round_trip
    with Cache(path) as cache:
        assert cache.audio_ids() == IDS
        assert cache.captions() == CAPTIONS
        assert cache.audio_index().tolist() == INDEX
        assert cache.audio_index().dtype == np.int64
        np.testing.assert_array_equal(cache.embeddings("audio")[:], audio)
        np.testing.assert_array_equal(cache.embeddings("text")[:], text)
        assert (cache.n_audio, cache.n_text) == (4, 6)


def test_round_trip_with_plain_h5py(round_trip):
    path, audio, text, _ = round_trip
    with h5py.File(path, "r") as h:
        attrs = dict(h.attrs)
        assert attrs["format"] == "diffatr-cache"
        assert attrs["format_version"] == 1
        created = datetime.datetime.fromisoformat(attrs["created"])
        assert created.tzinfo is not None
        assert abs(datetime.datetime.now(datetime.timezone.utc) - created).total_seconds() < 3600
        assert attrs["diffatr_version"]
        assert (attrs["dataset"], attrs["split"]) == ("clotho", "evaluation")
        assert attrs["embedding_space"] == "joint"
        assert list(h["audio/ids"].asstr()[:]) == IDS
        assert list(h["text/captions"].asstr()[:]) == CAPTIONS
        assert h["text/audio_index"].dtype == np.int64
        assert h["text/audio_index"][:].tolist() == INDEX
        assert h["audio/embeddings"].dtype == np.float32
        np.testing.assert_array_equal(h["audio/embeddings"][:], audio)
        np.testing.assert_array_equal(h["text/embeddings"][:], text)


def test_provenance_attributes(round_trip):
    path, _, _, settings = round_trip
    with h5py.File(path, "r") as h:
        audio = dict(h["audio"].attrs)
        assert audio["encoder"] == "cnn14" and audio["feature_kind"] == "pre_fc1"
        assert audio["checkpoint_sha256"] == "ab" * 32
        assert audio["sample_rate"] == 32000
        assert isinstance(audio["settings"], str)
        assert json.loads(audio["settings"]) == settings
        assert json.loads(h["text"].attrs["settings"]) == {"max_len": 30}
        assert "sample_rate" not in h["text"].attrs
    with Cache(path) as cache:
        assert cache.side_attrs("audio")["settings"] == settings
        assert cache.side_attrs("text")["encoder"] == "bert"


def test_many_small_chunks_equal_one_big_write(tmp_path):
    ids = [f"clip{i}" for i in range(11)]
    caps = [f"caption {j}" for j in range(23)]
    index = np.arange(23) % 11
    audio, text = _emb(11, 5, 3), _emb(23, 5, 4)
    with _writer(tmp_path / "big.h5") as w:
        w.add_audio(ids, audio)
        w.add_text(caps, index, text)
    with _writer(tmp_path / "small.h5") as w:
        for lo, hi in [(0, 1), (1, 1), (1, 4), (4, 10), (10, 11)]:
            w.add_audio(ids[lo:hi], audio[lo:hi])
        for lo in range(0, 23, 3):
            w.add_text(caps[lo : lo + 3], index[lo : lo + 3], text[lo : lo + 3])
    with h5py.File(tmp_path / "big.h5", "r") as big, h5py.File(tmp_path / "small.h5", "r") as small:
        for key in ("audio/ids", "text/captions"):
            assert list(small[key].asstr()[:]) == list(big[key].asstr()[:])
        for key in ("audio/embeddings", "text/embeddings", "text/audio_index"):
            assert small[key].dtype == big[key].dtype
            np.testing.assert_array_equal(small[key][:], big[key][:])
    np.testing.assert_array_equal(Cache(tmp_path / "small.h5").embeddings("text")[:], text)


# -- float16 and finiteness --------------------------------------------------------------------


def test_float16_on_request(tmp_path):
    audio = _emb(3, 4, 5) * 100  # values that float16 must round
    text = np.array([[1e-3, 65000.0, -65504.0, 1 / 3]], np.float32)
    with _writer(tmp_path / "h.h5", dtype="float16") as w:
        w.add_audio(["a", "b", "c"], audio)
        w.add_text(["x"], [0], text)
    with h5py.File(tmp_path / "h.h5", "r") as h:
        assert h["audio/embeddings"].dtype == np.float16
        assert h["text/embeddings"].dtype == np.float16
        np.testing.assert_array_equal(h["audio/embeddings"][:], audio.astype(np.float16))
        np.testing.assert_array_equal(h["text/embeddings"][:], text.astype(np.float16))
        assert not np.array_equal(h["audio/embeddings"][:].astype(np.float32), audio)


def test_values_beyond_float16_are_refused(tmp_path):
    target = tmp_path / "big.h5"
    emb = np.ones((3, 4), np.float32)
    emb[2, 1] = 7e4
    with pytest.raises(CacheError, match="float16"), _writer(target, dtype="float16") as w:
        w.add_audio(["a", "b", "c"], emb)
    assert _files(tmp_path) == []
    with _writer(target, dtype="float32") as w:  # float32 holds it
        w.add_audio(["a", "b", "c"], emb)
    assert Cache(target).embeddings("audio")[2, 1] == np.float32(7e4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_non_finite_input_is_refused_naming_the_row(tmp_path, bad, dtype):
    text = np.ones((3, 4), np.float32)
    text[1, 3] = bad
    with (
        pytest.raises(CacheError, match=r"row 3\b") as info,
        _writer(tmp_path / "x.h5", dtype=dtype) as w,
    ):
        w.add_audio(["a"], np.ones((1, 4)))
        w.add_text(["p", "q"], [0, 0], np.ones((2, 4)))
        w.add_text(["r", "s", "t"], [0, 0, 0], text)  # rows 2..4 of /text; row 3 is bad
    assert "text" in str(info.value)
    assert _files(tmp_path) == []


# -- ragged frames and tokens ------------------------------------------------------------------


def test_ragged_frames_and_tokens(tmp_path):
    rng = np.random.default_rng(6)
    lengths = [3, 0, 5, 0, 1]
    frames = [rng.standard_normal((n, 2)).astype(np.float32) for n in lengths]
    tokens = [rng.standard_normal((n, 3)).astype(np.float32) for n in (0, 4, 2)]
    with _writer(tmp_path / "seq.h5") as w:
        w.add_audio(["a", "b"], _emb(2, 4, 0), frames=frames[:2])
        w.add_audio(["c", "d", "e"], _emb(3, 4, 1), frames=frames[2:])
        w.add_text(["x", "y", "z"], [0, 2, 4], _emb(3, 4, 2), tokens=tokens)
    with h5py.File(tmp_path / "seq.h5", "r") as h:
        offsets = h["audio/frame_offsets"]
        assert offsets.shape == (6,) and offsets.dtype == np.int64
        assert offsets[:].tolist() == [0, 3, 3, 8, 8, 9]
        assert h["audio/frames"].shape == (9, 2)
        assert h["text/token_offsets"][:].tolist() == [0, 0, 4, 6]
    with Cache(tmp_path / "seq.h5") as cache:
        assert cache.has_sequences("audio") and cache.has_sequences("text")
        for i, expected in enumerate(frames):
            got = cache.sequence("audio", i)
            assert got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)
        for j, expected in enumerate(tokens):
            np.testing.assert_array_equal(cache.sequence("text", j), expected)


def test_first_chunk_of_empty_frames(tmp_path):
    with _writer(tmp_path / "seq.h5") as w:
        w.add_audio(["a", "b"], _emb(2, 4, 0), frames=[np.zeros((0, 2)), np.zeros((0, 2))])
        w.add_audio(["c"], _emb(1, 4, 1), frames=[np.full((2, 2), 7.0)])
    with Cache(tmp_path / "seq.h5") as cache:
        assert cache.sequence("audio", 0).shape == (0, 2)
        np.testing.assert_array_equal(cache.sequence("audio", 2), np.full((2, 2), 7.0))
        with pytest.raises(CacheError, match="tokens"):
            cache.sequence("text", 0)


@pytest.mark.parametrize("first_has_frames", [True, False])
def test_mixing_chunks_with_and_without_frames_is_refused(tmp_path, first_has_frames):
    frames = [np.ones((2, 3))]
    with pytest.raises(CacheError, match="sequence features"), _writer(tmp_path / "m.h5") as w:
        w.add_audio(["a"], np.ones((1, 4)), frames=frames if first_has_frames else None)
        w.add_audio(["b"], np.ones((1, 4)), frames=None if first_has_frames else frames)
    assert _files(tmp_path) == []


# -- atomicity and refusals --------------------------------------------------------------------


def test_only_the_partial_file_exists_while_writing(tmp_path):
    with _writer(tmp_path / "c.h5") as w:
        w.add_audio(["a"], np.ones((1, 4)))
        assert _files(tmp_path) == ["c.h5.partial"]
    assert _files(tmp_path) == ["c.h5"]


def test_an_exception_inside_the_writer_leaves_nothing(tmp_path):
    with pytest.raises(KeyError), _writer(tmp_path / "c.h5") as w:
        w.add_audio(["a"], np.ones((1, 4)))
        raise KeyError("interrupted")
    assert _files(tmp_path) == []


def test_existing_file_needs_overwrite(tmp_path):
    target = tmp_path / "c.h5"
    with _writer(target) as w:
        w.add_audio(["old"], np.ones((1, 4)))
    with pytest.raises(CacheError, match="already exists"):
        _writer(target)
    assert Cache(target).audio_ids() == ["old"]
    with _writer(target, overwrite=True) as w:
        w.add_audio(["new"], np.ones((1, 4)))
    assert Cache(target).audio_ids() == ["new"]
    assert _files(tmp_path) == ["c.h5"]


def test_failed_overwrite_keeps_the_old_file(tmp_path):
    target = tmp_path / "c.h5"
    with _writer(target) as w:
        w.add_audio(["old"], np.ones((1, 4)))
    with pytest.raises(CacheError), _writer(target, overwrite=True) as w:
        w.add_audio(["new"], np.full((1, 4), np.nan))
    assert Cache(target).audio_ids() == ["old"]
    assert _files(tmp_path) == ["c.h5"]


@pytest.mark.parametrize("split_chunks", [False, True])
def test_duplicate_clip_ids_are_refused(tmp_path, split_chunks):
    with pytest.raises(CacheError, match=r"'b'.*twice"), _writer(tmp_path / "d.h5") as w:
        if split_chunks:
            w.add_audio(["a", "b"], np.ones((2, 4)))
            w.add_audio(["c", "b"], np.ones((2, 4)))
        else:
            w.add_audio(["a", "b", "b"], np.ones((3, 4)))
    assert _files(tmp_path) == []


def test_a_refused_chunk_registers_no_clip_ids(tmp_path):
    with _writer(tmp_path / "r.h5") as w:
        with pytest.raises(CacheError, match="NaN"):
            w.add_audio(["a", "b"], np.full((2, 4), np.nan))
        w.add_audio(["a"], np.ones((1, 4)))  # "a" was never written: not a duplicate
        with pytest.raises(CacheError, match=r"rows 0 and 1"):
            w.add_audio(["a"], np.ones((1, 4)))
    assert Cache(tmp_path / "r.h5").audio_ids() == ["a"]


@pytest.mark.parametrize("bad", [2, -2])
def test_audio_index_past_the_clips_is_refused_at_close(tmp_path, bad):
    expected = f"row 1 points to clip {bad}"
    with pytest.raises(CacheError, match=expected) as info, _writer(tmp_path / "i.h5") as w:
        w.add_audio(["a", "b"], np.ones((2, 4)))
        w.add_text(["x", "y"], [0, bad], np.ones((2, 4)))
    assert "2 clips" in str(info.value)
    assert _files(tmp_path) == []


def test_shape_mistakes_are_refused(tmp_path):
    with _writer(tmp_path / "s.h5") as w:
        with pytest.raises(CacheError, match="audio_index"):
            w.add_text(["x", "y"], [0], np.ones((2, 4)))
        with pytest.raises(CacheError, match="shape"):
            w.add_audio(["a", "b"], np.ones((3, 4)))
    with pytest.raises(CacheError, match="embedding space"):
        _writer(tmp_path / "t.h5", space="shared")
    with pytest.raises(CacheError, match="dtype"):
        _writer(tmp_path / "t.h5", dtype="float64")


# -- reader --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audio_only(tmp_path_factory):
    path = tmp_path_factory.mktemp("ao") / "audio_only.h5"
    with _writer(path) as w:
        w.add_audio(["a", "b"], np.ones((2, 4)))
    return path


@pytest.mark.parametrize(
    "ask",
    [
        lambda c: c.embeddings("text"),
        lambda c: c.captions(),
        lambda c: c.audio_index(),
        lambda c: c.n_text,
        lambda c: c.load_tensors(),
    ],
)
def test_audio_only_cache_says_the_text_side_is_missing(audio_only, ask):
    with Cache(audio_only) as cache, pytest.raises(CacheError, match="/text") as info:
        ask(cache)
    assert str(audio_only) in str(info.value)
    assert "\n" not in str(info.value)


def test_audio_only_cache_still_reads_its_audio(audio_only):
    with Cache(audio_only) as cache:
        assert cache.has("audio") and not cache.has("text")
        assert cache.audio_ids() == ["a", "b"]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_load_tensors(tmp_path, dtype):
    audio, text = _emb(5, 3, 7), _emb(7, 3, 8)
    with _writer(tmp_path / "t.h5", dtype=dtype) as w:
        w.add_audio(list("abcde"), audio)
        w.add_text(list("pqrstuv"), [0, 1, 2, 3, 4, -1, 0], text)
    data = load_tensors(tmp_path / "t.h5")
    stored = np.dtype(dtype)
    for got, src in ((data.audio, audio), (data.text, text)):
        assert got.dtype == torch.float32
        expected = torch.from_numpy(src.astype(stored).astype(np.float32))
        assert torch.equal(got, expected)
    assert data.audio_index.dtype == torch.int64
    assert data.audio_index.tolist() == [0, 1, 2, 3, 4, -1, 0]
    assert data.audio_ids == list("abcde") and data.captions == list("pqrstuv")


def test_rows_are_lazy_and_chunked(tmp_path):
    audio = _emb(10, 3, 9)
    with _writer(tmp_path / "r.h5", dtype="float16") as w:
        w.add_audio([str(i) for i in range(10)], audio)
    expected = audio.astype(np.float16)
    with Cache(tmp_path / "r.h5") as cache:
        rows = cache.embeddings("audio")
        assert isinstance(rows, Rows) and not isinstance(rows, np.ndarray)
        assert len(rows) == 10 and rows.shape == (10, 3) and rows.dtype == np.float16
        np.testing.assert_array_equal(rows[2:5], expected[2:5])
        np.testing.assert_array_equal(rows[7], expected[7])
        chunks = list(rows.chunks(3))
        assert [start for start, _ in chunks] == [0, 3, 6, 9]
        assert [len(block) for _, block in chunks] == [3, 3, 3, 1]
        np.testing.assert_array_equal(np.concatenate([b for _, b in chunks]), expected)
        assert len(list(rows.chunks(100))) == 1


def test_cache_opened_before_fork_works_in_the_child(round_trip):
    path, audio, _, _ = round_trip
    cache = Cache(path)
    np.testing.assert_array_equal(cache.embeddings("audio")[0], audio[0])  # handle open
    parent_handle = cache.h5
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        try:
            row = cache.embeddings("audio")[2].tolist()
            own_handle = cache.h5 is not parent_handle  # re-opened after the fork
            ids = cache.audio_ids()
            cache.close()  # closes the child's handle only
            queue.put(("ok", os.getpid(), row, ids, own_handle))
        except BaseException as e:  # report, do not hang the parent
            queue.put(("error", os.getpid(), repr(e), None, None))

    proc = ctx.Process(target=child)
    proc.start()
    status, pid, row, ids, own_handle = queue.get(timeout=30)
    proc.join(timeout=30)
    assert status == "ok", row
    assert pid != os.getpid() and proc.exitcode == 0
    np.testing.assert_array_equal(np.array(row, np.float32), audio[2])
    assert ids == IDS
    assert own_handle
    assert cache.h5 is parent_handle  # the parent keeps its handle ...
    np.testing.assert_array_equal(cache.embeddings("audio")[3], audio[3])  # ... and it works
    cache.close()


def test_empty_chunks_write_nothing(tmp_path):
    path = tmp_path / "empty_chunks.h5"
    with _writer(path) as w:
        w.add_text([], [], np.zeros((0, 4)))
        w.add_audio([], np.zeros((0, 4)))
        w.add_audio(["a"], np.ones((1, 4)))
    with h5py.File(path) as h:
        assert "text" not in h and len(h["audio/ids"]) == 1
