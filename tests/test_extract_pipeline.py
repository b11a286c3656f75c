"""The extraction pipeline with fake encoders: rows in input order, equal-length batches, bad
clips reported and listed, one-sided caches, attributes, the command line."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from extract_helpers import (
    BAD,
    CLIPS,
    HOOK,
    FakeAudioEncoder,
    FakeTextEncoder,
    PadTo,
    make,
    make_dataset,
    read_h5,
)

from diffatr.cache import Cache, verify
from diffatr.cli import main
from diffatr.errors import UserError
from diffatr.extract import ExtractConfig, extract, guess_names, load_audio
from diffatr.extract.batching import LengthBuckets
from diffatr.extract.panns import AudioEncoderConfig
from diffatr.extract.text import TextEncoderConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("extract"))


def good_clips():
    return [name for name in CLIPS if name not in BAD]


def captions_of(name):
    i = list(CLIPS).index(name)
    return [f"a sound, number {i}.{k} of clip {name}" for k in range(3)]


def config(**kw):
    frames, tokens = kw.pop("frames", False), kw.pop("tokens", False)
    return ExtractConfig(
        audio=AudioEncoderConfig(frames=frames),
        text=TextEncoderConfig(tokens=tokens),
        **{"batch_size": 2, "workers": 0, "chunk_clips": 5, **kw},
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_cache_equals_each_clip_and_caption_encoded_alone(data, tmp_path, workers):
    captions, audio = data
    out = tmp_path / "out.h5"
    seen = []

    def encoders(cfg):
        a, t = make(cfg)
        seen.append(a)
        return a, t

    summary = extract(
        captions, audio, out, config(workers=workers, frames=True, tokens=True),
        progress=False, encoders=encoders,
    )  # fmt: skip
    assert (summary.clips, summary.clips_skipped) == (9, 3)
    assert (summary.captions, summary.captions_skipped) == (27, 9)
    assert (summary.chunks, summary.chunks_resumed) == (3, 0)
    assert not (tmp_path / "out.h5.parts").exists()
    names = good_clips()
    with Cache(out) as cache:
        assert cache.audio_ids() == names
        emb = cache.embeddings("audio")[:]
        for row, name in enumerate(names):
            wave = PadTo()(load_audio(audio / name))
            np.testing.assert_array_equal(emb[row], FakeAudioEncoder.embed_one(wave))
            np.testing.assert_array_equal(
                cache.sequence("audio", row), FakeAudioEncoder().frames_one(wave)
            )
        expected = [c for name in names for c in captions_of(name)]
        assert cache.captions() == expected
        np.testing.assert_array_equal(cache.audio_index(), np.repeat(np.arange(9), 3))
        text = cache.embeddings("text")[:]
        for row, caption in enumerate(expected):
            np.testing.assert_array_equal(text[row], FakeTextEncoder.embed_one(caption))
            np.testing.assert_array_equal(
                cache.sequence("text", row), FakeTextEncoder.tokens_one(caption)
            )
        attrs = cache.attrs
        assert cache.side_attrs("audio")["encoder"] == "fake-audio"
        assert cache.side_attrs("audio")["settings"]["device"] == "auto"  # the user's choice
    skipped = json.loads(attrs["skipped_clips"])
    assert [s["clip_id"] for s in skipped] == ["empty.wav", "noise.wav", "gone.wav"]
    assert "no audio file found" in skipped[2]["reason"]
    assert all(s["reason"] for s in skipped)
    assert attrs["skipped_captions"] == 9
    assert attrs["embedding_space"] == "backbone"
    assert (attrs["dataset"], attrs["split"]) == ("", "test")  # Clotho's layout is generic
    assert attrs["caption_format"] == "clotho" and attrs["caption_encoding"].startswith("utf-8")
    assert json.loads(attrs["extract_config"])["audio"]["feature"] == "pre_fc1"
    assert len(attrs["captions_sha256"]) == 64
    report = verify(out)
    assert report.ok, report.errors
    batches = seen[0].batches
    assert sum(b for b, _ in batches) == 9
    assert all(b <= 2 for b, _ in batches) and any(b == 2 for b, _ in batches)


def test_bad_clips_are_reported_by_name(data, tmp_path, capsys):
    captions, audio = data
    extract(captions, audio, tmp_path / "o.h5", config(), progress=False, encoders=make)
    err = capsys.readouterr().err
    for name in BAD:
        assert f"skipped clip {name}" in err
    assert "its 3 caption(s) are left out" in err
    # a missing clip says where it was looked for (the name, then other audio extensions)
    tried = ", ".join(str(audio.resolve() / f"gone{ext}") for ext in (".wav", ".flac", ".ogg"))
    assert f"skipped clip gone.wav (no audio file found for this clip; looked for {tried}" in err


def test_audio_only_and_text_only_caches(data, tmp_path):
    captions, audio = data
    a, t = tmp_path / "a.h5", tmp_path / "t.h5"
    extract(captions, audio, a, config(audio_only=True), progress=False, encoders=make)
    summary = extract(captions, None, t, config(text_only=True), progress=False, encoders=make)
    with Cache(a) as cache:
        assert not cache.has("text") and cache.audio_ids() == good_clips()
        assert cache.attrs["skipped_captions"] == 9
    assert summary.clips == 0 and summary.captions == 36
    with Cache(t) as cache:
        assert not cache.has("audio")
        assert (cache.audio_index() == -1).all()
        ids = json.loads(cache.attrs["caption_clip_ids"])
        assert ids == [name for name in CLIPS for _ in range(3)]
        assert cache.captions() == [c for name in CLIPS for c in captions_of(name)]
    assert verify(t).ok and any("only /text" in w for w in verify(t).warnings)


def test_user_errors(data, tmp_path):
    captions, audio = data
    out = tmp_path / "o.h5"
    with pytest.raises(UserError, match="--audio-dir is required"):
        extract(captions, None, out, config(), progress=False, encoders=make)
    with pytest.raises(UserError, match="exclude each other"):
        extract(captions, audio, out, config(audio_only=True, text_only=True), encoders=make)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"none of the 12 clips .* has an audio file"):
        extract(captions, empty, out, config(), progress=False, encoders=make)
    out.write_bytes(b"x")
    with pytest.raises(UserError, match="already exists; remove it or pass --overwrite"):
        extract(captions, audio, out, config(), progress=False, encoders=make)
    extract(captions, audio, out, config(), progress=False, encoders=make, overwrite=True)
    assert Cache(out).n_audio == 9


def test_caption_file_problems_are_recorded(tmp_path, data):
    _, audio = data
    captions = tmp_path / "val.csv"
    captions.write_text("file_name,caption_1\na.wav,a dog barks\n,no file name\nb.wav,rain falls\n")
    out = tmp_path / "o.h5"
    extract(captions, audio, out, config(), progress=False, encoders=make)
    attrs = read_h5(out)
    problems = json.loads(attrs["@caption_problems"])
    assert len(problems) == 1 and "val.csv:3" in problems[0]
    assert attrs["@split"] == "val"


def test_length_buckets_against_a_naive_grouping():
    rng = np.random.default_rng(0)
    lengths = rng.choice([3, 5, 7, 11], size=200)
    for batch_size, pending in [(1, 1), (4, 6), (8, 1000)]:
        buckets, batches = LengthBuckets(batch_size, pending), []
        for i, n in enumerate(lengths):
            batches += list(buckets.add(i, np.full(n, i, np.float32)))
            assert buckets.pending <= pending
        batches += list(buckets.flush())
        clips = sorted(c for members, _ in batches for c in members)
        assert clips == list(range(200))  # every clip exactly once
        for members, waves in batches:
            assert 1 <= len(members) <= batch_size
            assert waves.shape == (len(members), lengths[members[0]])
            np.testing.assert_array_equal(waves[:, 0], members)  # rows belong to their clips
        if pending >= 200:  # no early flush: batches are as full as a naive grouping makes them
            naive = sum(-(-int((lengths == n).sum()) // batch_size) for n in (3, 5, 7, 11))
            assert len(batches) == naive


@pytest.mark.parametrize(
    ("path", "fmt", "names"),
    [
        ("/data/clotho/test.csv", "clotho", ("", "test")),  # a path proves nothing
        ("/x/clotho_csv_files/clotho_captions_evaluation.csv", "clotho", ("", "evaluation")),
        ("/d/audiocaps/mei_val.csv", "audiocaps_mei", ("", "val")),  # file_name,caption: generic
        ("/d/stuff/train.csv", "audiocaps", ("audiocaps", "train")),  # AudioCaps' own header
        ("/d/mine/list.jsonl", "manifest", ("", "list")),
        ("/d/sound_effects/captions_test.csv", "clotho", ("", "test")),
        ("/d/x/wavcaps_as.json", "wavcaps", ("wavcaps", "wavcaps_as")),  # WavCaps' own JSON
    ],
)
def test_guess_names(path, fmt, names):
    assert guess_names(path, fmt) == names


def test_extract_command(data, tmp_path, monkeypatch):
    captions, audio = data
    monkeypatch.setenv("DIFFATR_EXTRACT_ENCODERS", HOOK)
    out = tmp_path / "cli.h5"
    args = [
        "extract", str(captions), "--audio-dir", str(audio), "--out", str(out),
        "--batch-size", "3", "--workers", "0", "--chunk-clips", "4", "--frames",
        "--dataset", "tiny", "--dtype", "float16",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 9 clips, 27 captions" in result.output
    assert "skipped 3 clips and their 9 captions" in result.output
    attrs = read_h5(out)
    assert attrs["@dataset"] == "tiny" and attrs["audio/embeddings"].dtype == np.float16
    assert json.loads(attrs["@extract_config"])["audio"]["frames"] is True
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already exists" in again.output
    both = CliRunner().invoke(main, [*args, "--audio-only", "--text-only", "--overwrite"])
    assert both.exit_code == 1 and "exclude each other" in both.output


def test_command_defaults_are_the_config_defaults(data, tmp_path, monkeypatch):
    import diffatr.extract

    captions, audio = data
    seen = {}

    def fake_extract(captions, audio_dir, out, cfg, **kw):
        seen.update(cfg=cfg, **kw)
        raise UserError("stop here")

    monkeypatch.setattr(diffatr.extract, "extract", fake_extract)
    args = ["extract", str(captions), "--audio-dir", str(audio), "--out", str(tmp_path / "o.h5")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "stop here" in result.output
    assert seen["cfg"] == ExtractConfig()
    assert (seen["restart"], seen["overwrite"]) == (False, False)
