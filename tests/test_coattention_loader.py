"""Streaming sequence features for the co-attention head: `Cache.sequences`, `read_rows`, and
the training loader (every pair once per epoch, deterministic, bounded reads)."""

import numpy as np
import pytest

from diffatr.cache import Cache, CacheError, CacheWriter
from diffatr.coattention import PairStream, sequences
from diffatr.coattention.sequences import read_rows, runs, sequence_dims
from diffatr.errors import UserError

N_CLIPS = 23


def write_marked(path, clips=N_CLIPS, frames=True, tokens=True, empty_clip=None) -> np.ndarray:
    """A cache whose frames carry their clip row and tokens their caption row in column 0;
    clips have 1..4 captions, every 7th caption has no clip. Returns audio_index."""
    rng = np.random.default_rng(0)
    index = []
    for clip in range(clips):
        index += [clip] * int(rng.integers(1, 5))
    index = np.array(index)
    index[::7] = -1
    lengths_f = rng.integers(1, 6, clips)
    if empty_clip is not None:
        lengths_f[empty_clip] = 0
    lengths_t = rng.integers(1, 9, len(index))
    f = [np.full((n, 3), float(i), np.float32) for i, n in enumerate(lengths_f)]
    t = [np.full((n, 2), float(j), np.float32) for j, n in enumerate(lengths_t)]
    with CacheWriter(path, dataset="marked", split="train", space="backbone") as w:
        w.add_audio([f"c{i}.wav" for i in range(clips)], np.ones((clips, 4)), f if frames else None)
        w.add_text(
            [f"cap {j}" for j in range(len(index))],
            index,
            np.ones((len(index), 5)),
            t if tokens else None,
        )
    return index


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    path = tmp_path_factory.mktemp("loader") / "marked.h5"
    return path, write_marked(path)


def test_cache_sequences_reads_one_contiguous_slice(marked) -> None:
    path, _ = marked
    with Cache(path) as cache:
        values, offsets = cache.sequences("text", 3, 9)
        assert offsets[0] == 0 and len(offsets) == 7
        for i, row in enumerate(range(3, 9)):
            np.testing.assert_array_equal(
                values[offsets[i] : offsets[i + 1]], cache.sequence("text", row)
            )
        empty, offsets = cache.sequences("audio", 5, 5)
        assert empty.shape == (0, 3) and offsets.tolist() == [0]
        with pytest.raises(CacheError, match="out of range"):
            cache.sequences("audio", 20, N_CLIPS + 1)
        assert sequence_dims(cache, "train") == (3, 2)


def test_read_rows_groups_neighbours_and_refuses_empty_rows(marked, tmp_path) -> None:
    assert runs(np.array([0, 1, 2, 5, 200, 201])) == [(0, 6), (200, 202)]
    assert runs(np.array([0, 1, 2, 5, 200, 201]), max_gap=0) == [(0, 3), (5, 6), (200, 202)]
    assert runs(np.array([], dtype=np.int64)) == []
    path, _ = marked
    with Cache(path) as cache:
        got = read_rows(cache, "audio", np.array([0, 4, 22]))
        assert sorted(got) == [0, 4, 22] and all((got[r] == r).all() for r in got)
    write_marked(tmp_path / "empty.h5", empty_clip=4)
    with Cache(tmp_path / "empty.h5") as cache, pytest.raises(UserError, match="clip row 4 has no"):
        read_rows(cache, "audio", np.array([3, 4]))


def epoch_pairs(stream: PairStream, epoch: int) -> list[tuple[int, int]]:
    out = []
    for batch in stream.epoch(epoch):
        for r, c, t, f in zip(batch.rows, batch.clips, batch.tokens, batch.frames, strict=True):
            assert (t == r).all() and (f == c).all()  # each pair carries its own features
            out.append((int(r), int(c)))
    return out


@pytest.mark.parametrize("chunk,buffer,batch", [(5, 2, 4), (7, 1, 6), (1000, 3, 5)])
def test_every_pair_once_per_epoch(marked, chunk: int, buffer: int, batch: int) -> None:
    path, index = marked
    expected = [(j, int(index[j])) for j in np.flatnonzero(index >= 0)]
    with Cache(path) as cache:
        stream = PairStream(cache, batch, chunk, buffer, seed=3)
        sizes = [len(b.rows) for b in stream.epoch(0)]
        assert len(sizes) == len(stream) and all(s == batch for s in sizes[:-1])
        for epoch in (0, 1):
            pairs = epoch_pairs(stream, epoch)
            assert sorted(pairs) == expected
        assert epoch_pairs(stream, 0) != epoch_pairs(stream, 1)  # reshuffled every epoch


def test_the_order_is_a_function_of_seed_and_epoch(marked) -> None:
    path, _ = marked
    with Cache(path) as cache:
        first = epoch_pairs(PairStream(cache, 4, 5, 2, seed=1), 2)
        again = epoch_pairs(PairStream(cache, 4, 5, 2, seed=1), 2)
        other = epoch_pairs(PairStream(cache, 4, 5, 2, seed=2), 2)
    assert first == again and first != other


def test_reads_are_contiguous_chunks_never_the_whole_file(marked, monkeypatch) -> None:
    path, index = marked
    reads = []
    original = Cache.sequences

    def spy(self, side, start, stop):
        reads.append((side, start, stop))
        return original(self, side, start, stop)

    monkeypatch.setattr(Cache, "sequences", spy)
    monkeypatch.setattr(sequences, "MAX_GAP", 0)  # this cache is tiny: only true neighbours
    with Cache(path) as cache:
        stream = PairStream(cache, 4, chunk_captions=6, buffer_chunks=2, seed=0)
        list(stream.epoch(0))
    text = [(lo, hi) for side, lo, hi in reads if side == "text"]
    audio = [(lo, hi) for side, lo, hi in reads if side == "audio"]
    spans = [np.ptp(c) + 1 for c in stream.chunks]  # caption rows a chunk covers
    assert max(hi - lo for lo, hi in text) <= max(spans)
    assert sum(hi - lo for lo, hi in text) <= len(index)  # no caption read twice
    assert sum(hi - lo for lo, hi in audio) <= 2 * N_CLIPS  # a clip at most in two windows


def test_siblings_are_marked_in_both_directions(marked) -> None:
    path, _ = marked
    with Cache(path) as cache:
        batch = next(PairStream(cache, 64, 1000, 1, seed=0).epoch(0))  # everything at once
    tokens, token_mask, frames, frame_mask, siblings = batch.tensors()
    assert tokens.shape[:2] == token_mask.shape and frames.shape[:2] == frame_mask.shape
    assert token_mask.sum(1).tolist() == [len(t) for t in batch.tokens]
    same = batch.clips[:, None] == batch.clips[None, :]
    np.testing.assert_array_equal(siblings.numpy(), same & ~np.eye(len(same), dtype=bool))
    assert siblings.any()


@pytest.mark.parametrize(
    "frames,tokens,flags",
    [(False, True, "--frames"), (True, False, "--tokens"), (False, False, "--frames --tokens")],
)
def test_a_cache_without_sequences_names_the_extract_option(tmp_path, frames, tokens, flags):
    write_marked(tmp_path / "bare.h5", frames=frames, tokens=tokens)
    with Cache(tmp_path / "bare.h5") as cache, pytest.raises(UserError) as err:
        sequence_dims(cache, "train")
    message = str(err.value)
    assert f"diffatr extract ... {flags}`" in message and "bare.h5" in message
    assert "co-attention" in message
