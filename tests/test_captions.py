"""Caption readers: the real Clotho/AudioCaps files (when ../shared/data exists) and small files
written here for encodings, quoting, bad rows, audio lookup, manifests and WavCaps JSON."""

import json
from pathlib import Path

import pytest

from diffatr.errors import UserError
from diffatr.extract.captions import CAPTION_FORMATS, read_captions

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason="../shared/data (real caption files) absent"
)
CLOTHO_HEADER = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"


def write(folder: Path, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"RIFF")


# -- the real files ---------------------------------------------------------------------------
REAL = [  # file, format, clips, captions per clip (None: one row per clip, 1 caption)
    ("clotho/train.csv", "clotho", 3839, 5),
    ("clotho/val.csv", "clotho", 1045, 5),
    ("clotho/test.csv", "clotho", 1045, 5),
    ("audiocaps/train.csv", "audiocaps", 49838, 1),
    ("audiocaps/val.csv", "audiocaps", 495, 5),
    ("audiocaps/test.csv", "audiocaps", 975, 5),
    ("audiocaps/mei_train.csv", "audiocaps_mei", 49274, 1),
    ("audiocaps/mei_val.csv", "audiocaps_mei", 494, 5),
    ("audiocaps/mei_test.csv", "audiocaps_mei", 957, 5),
]


@needs_data
@pytest.mark.parametrize(("name", "fmt", "n_clips", "per_clip"), REAL)
def test_real_files_parse_to_known_counts(name, fmt, n_clips, per_clip):
    table = read_captions(DATA / name)
    assert (table.format, len(table.clips), table.problems) == (fmt, n_clips, [])
    assert {len(c.captions) for c in table.clips} == {per_clip}
    assert table.n_captions == n_clips * per_clip
    assert table.encoding == "utf-8"
    assert len({c.clip_id for c in table.clips}) == n_clips
    assert all(c.audio_path is None for c in table.clips)  # no audio_dir given


@needs_data
def test_real_clotho_quoted_caption_with_comma_is_one_caption():
    clip = read_captions(DATA / "clotho/test.csv").clips[0]
    assert clip.clip_id == "Santa Motor.wav"
    assert (
        clip.captions[4] == "While rhythmically punching or stamping, a machine whines and squeals."
    )


@needs_data
@pytest.mark.parametrize("split", ["val", "test"])
def test_real_mei_audiocaps_is_a_subset_of_the_official_file(split):
    official = read_captions(DATA / f"audiocaps/{split}.csv").clips
    by_mei_name = {f"Y{c.clip_id.rsplit('_', 1)[0]}.wav": set(c.captions) for c in official}
    mei = read_captions(DATA / f"audiocaps/mei_{split}.csv").clips
    assert all(by_mei_name[c.clip_id] == set(c.captions) for c in mei)
    assert official[0].clip_id == ("vfY_TJq7n_U_130" if split == "val" else "7fmOlUlwoNg_20")


@needs_data
def test_real_clotho_read_as_latin1_bytes_is_the_same(tmp_path):
    text = (DATA / "clotho/val.csv").read_text("utf-8") + "caf\u00e9.wav,a,b,c,d,\u00e9t\u00e9\n"
    utf8 = read_captions(write(tmp_path, "u.csv", text))
    latin1 = read_captions(write(tmp_path, "l.csv", text, "iso-8859-1"))
    assert (utf8.encoding, latin1.encoding) == ("utf-8", "iso-8859-1")
    assert latin1.clips == utf8.clips and len(latin1.clips) == 1046


# -- encodings ------------------------------------------------------------------------------
def test_iso_8859_1_is_detected_and_decoded(tmp_path):
    row = 'caf\u00e9.wav,Un caf\u00e9 servi,"Le gar\u00e7on, puis ""Voil\u00e0""",c,d,e\n'
    path = write(tmp_path, "c.csv", CLOTHO_HEADER + row, "iso-8859-1")
    touch(tmp_path / "audio", "caf\u00e9.wav")
    table = read_captions(path, tmp_path / "audio")
    assert table.encoding == "iso-8859-1"
    (clip,) = table.clips
    assert clip.clip_id == "caf\u00e9.wav"
    assert clip.captions[:2] == ("Un caf\u00e9 servi", 'Le gar\u00e7on, puis "Voil\u00e0"')
    assert clip.audio_path == str(tmp_path / "audio" / "caf\u00e9.wav")


def test_cp1252_curly_quotes(tmp_path):
    row = "a.wav,\u201cloud\u201d bang,b,c,d,e\n"
    table = read_captions(write(tmp_path, "c.csv", CLOTHO_HEADER + row, "cp1252"))
    assert table.encoding == "cp1252"
    assert table.clips[0].captions[0] == "\u201cloud\u201d bang"


def test_utf8_bom_does_not_hide_the_header(tmp_path):
    path = write(tmp_path, "c.csv", "\ufeff" + CLOTHO_HEADER + "a.wav,\u00e9,b,c,d,e\n")
    table = read_captions(path)
    assert (table.format, table.encoding) == ("clotho", "utf-8-sig")
    assert table.clips[0].captions[0] == "\u00e9"


def test_mixed_encodings_are_decoded_per_line_and_noted(tmp_path):
    data = (CLOTHO_HEADER + "a.wav,caf\u00e9,b,c,d,e\n").encode() + (
        "b.wav,gar\u00e7on,b,c,d,e\n".encode("iso-8859-1")
    )
    table = read_captions(write(tmp_path, "c.csv", data))
    assert table.encoding == "utf-8+iso-8859-1"
    assert [c.captions[0] for c in table.clips] == ["caf\u00e9", "gar\u00e7on"]
    assert table.notes == [f"{tmp_path / 'c.csv'}:3: not valid UTF-8; decoded as iso-8859-1"]


def test_utf16_with_bom(tmp_path):
    table = read_captions(write(tmp_path, "c.csv", CLOTHO_HEADER + "a.wav,x,b,c,d,e\n", "utf-16"))
    assert table.encoding == "utf-16" and table.clips[0].captions[0] == "x"


# -- quoting and bad rows -----------------------------------------------------------------------
def test_quotes_commas_newlines_crlf_and_line_numbers(tmp_path):
    text = (
        CLOTHO_HEADER
        + 'a.wav,"one, two","say ""hi""","line\r\nbreak",d,e\r\n'
        + "b.wav,x,y\r\n"  # line 4 (the quoted newline makes record 1 two lines)
        + "c.wav,,y,z,w,v\r\n"
        + "d.wav,,,,,\r\n"
        + "\r\n"
        + ",x,y,z,w,v\r\n"
    )
    path = write(tmp_path, "c.csv", text)
    table = read_captions(path)
    assert [c.clip_id for c in table.clips] == ["a.wav", "c.wav"]
    assert table.clips[0].captions[:3] == ("one, two", 'say "hi"', "line\r\nbreak")
    assert table.clips[1].captions == ("y", "z", "w", "v")
    assert table.problems == [
        f"{path}:4: 3 fields, the header has 6; skipped",
        f"{path}:5: caption_1 is empty; left out",
        *(f"{path}:6: caption_{k} is empty; left out" for k in range(1, 6)),
        f"{path}:6: no caption; skipped",
        f"{path}:8: empty file_name; skipped",
    ]


def test_stray_quote_is_an_error_naming_the_line(tmp_path):
    path = write(tmp_path, "c.csv", CLOTHO_HEADER + "a.wav,a,b,c,d,e\n" + 'b.wav,"open,b,c,d,e\n')
    with pytest.raises(UserError, match=r"c\.csv:3: broken CSV quoting"):
        read_captions(path)


def test_clotho_duplicate_rows_merge_or_skip(tmp_path):
    text = CLOTHO_HEADER + "a.wav,1,2,3,4,5\nb.wav,x,y,z,w,v\na.wav,1,2,3,4,5\na.wav,6,7,8,9,10\n"
    path = write(tmp_path, "c.csv", text)
    table = read_captions(path)
    assert [c.clip_id for c in table.clips] == ["a.wav", "b.wav"]
    assert table.clips[0].captions == tuple(str(k) for k in range(1, 11))
    assert table.problems == [f"{path}:4: repeats 'a.wav' of line 2; skipped"]
    assert table.notes == [f"{path}:5: 'a.wav' also on line 2; captions added to that clip"]


def test_any_number_of_caption_columns_in_numeric_order(tmp_path):
    text = "caption_10,file_name,caption_2,caption_1\nten,a.wav,two,one\n"
    table = read_captions(write(tmp_path, "c.csv", text))
    assert table.format == "clotho" and table.clips[0].captions == ("one", "two", "ten")


def test_unknown_header_names_file_header_and_accepted_ones(tmp_path):
    path = write(tmp_path, "meta.csv", "file_name,keywords,sound_id\na.wav,k,1\n")
    with pytest.raises(UserError) as e:
        read_captions(path)
    msg = str(e.value)
    assert str(path) in msg and "file_name,keywords,sound_id" in msg
    assert "audiocap_id,youtube_id,start_time,caption" in msg and "caption_1" in msg


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "unrecognised"),
        (CLOTHO_HEADER, "no usable clip"),
        (CLOTHO_HEADER + "a,,,,,\n", r"no usable clip \(6 problems; first problem: .*:2: "),
    ],
)
def test_empty_files_are_user_errors(tmp_path, content, match):
    with pytest.raises(UserError, match=match):
        read_captions(write(tmp_path, "c.csv", content))


def test_bad_arguments_are_user_errors(tmp_path):
    path = write(tmp_path, "c.csv", CLOTHO_HEADER + "a.wav,1,2,3,4,5\n")
    with pytest.raises(UserError, match="not a folder"):
        read_captions(path, tmp_path / "nope")
    with pytest.raises(UserError, match="cannot read"):
        read_captions(tmp_path / "missing.csv")
    manifest = write(tmp_path, "m.csv", "path,caption\nx.wav,a\n")
    with pytest.raises(UserError, match="--format audiocaps does not fit"):
        read_captions(manifest, format="audiocaps")
    with pytest.raises(UserError, match="--format clotho does not fit"):
        read_captions(manifest, format="clotho")
    with pytest.raises(UserError, match="unknown"):
        read_captions(path, format="csv")
    assert "auto" in CAPTION_FORMATS


# -- audio lookup ---------------------------------------------------------------------------
def test_clotho_audio_lookup_with_converted_extension(tmp_path):
    text = CLOTHO_HEADER + "a.wav,1,2,3,4,5\nb c.wav,1,2,3,4,5\nmissing.wav,1,2,3,4,5\n"
    touch(tmp_path / "audio", "a.wav", "b c.flac")
    table = read_captions(write(tmp_path, "c.csv", text), tmp_path / "audio")
    audio = tmp_path / "audio"
    assert [c.audio_path for c in table.clips] == [
        str(audio / "a.wav"),
        str(audio / "b c.flac"),
        None,
    ]
    assert table.missing_audio == ["missing.wav"]
    assert all(c.audio_path is None for c in read_captions(tmp_path / "c.csv").clips)


def test_audio_lookup_matches_decomposed_unicode_file_names(tmp_path):
    decomposed = "cafe\u0301 bell.wav"  # how macOS stores "café bell.wav"
    touch(tmp_path / "audio", decomposed)
    path = write(tmp_path, "c.csv", CLOTHO_HEADER + "caf\u00e9 bell.wav,1,2,3,4,5\n")
    (clip,) = read_captions(path, tmp_path / "audio").clips
    assert clip.clip_id == "caf\u00e9 bell.wav"
    assert clip.audio_path == str(tmp_path / "audio" / decomposed)


def test_audiocaps_official_groups_and_finds_both_namings(tmp_path):
    text = (
        "audiocap_id,youtube_id,start_time,caption\n"
        "1,abc,30,first of abc\n"
        "2,xyz,0,first of xyz\n"
        '3,abc,30,"second, of abc"\n'
        "4,gone,10,nobody kept this\n"
        "5,abc,40,another clip of abc\n"
        "6,q,,no start\n"
        "7,q,ten,bad start\n"
        "2,xyz,0,repeated id\n"
        "9,xyz,0,\n"
    )
    touch(tmp_path / "audio", "abc_30.flac", "Yxyz.wav", "abc_40.wav")
    path = write(tmp_path, "train.csv", text)
    table = read_captions(path, tmp_path / "audio")
    assert table.format == "audiocaps"
    ids = [c.clip_id for c in table.clips]
    assert ids == ["abc_30", "xyz_0", "gone_10", "abc_40"]
    assert table.clips[0].captions == ("first of abc", "second, of abc")
    names = [c.audio_path and Path(c.audio_path).name for c in table.clips]
    assert names == ["abc_30.flac", "Yxyz.wav", None, "abc_40.wav"]
    assert table.problems == [
        f"{path}:7: empty youtube_id or start_time; skipped",
        f"{path}:8: start_time 'ten' is not a number; skipped",
        f"{path}:9: audiocap_id 2 repeats line 3; skipped",
        f"{path}:10: empty caption (audiocap_id 9); skipped",
    ]


def test_mei_audiocaps_train_groups_by_file_name(tmp_path):
    text = "file_name,caption\nYaaaaaaaaaaa.wav,one\nYbbbbbbbbbbb.wav,two\nYaaaaaaaaaaa.wav,three\n"
    table = read_captions(write(tmp_path, "t.csv", text))
    assert table.format == "audiocaps_mei"
    assert [(c.clip_id, c.captions) for c in table.clips] == [
        ("Yaaaaaaaaaaa.wav", ("one", "three")),
        ("Ybbbbbbbbbbb.wav", ("two",)),
    ]


def test_mei_audiocaps_val_layout_is_recognised_by_its_ids(tmp_path):
    path = write(tmp_path, "v.csv", CLOTHO_HEADER + "Y7fmOlUlwoNg.wav,1,2,3,4,5\n")
    assert read_captions(path).format == "audiocaps_mei"
    assert read_captions(path, format="audiocaps").format == "audiocaps_mei"
    assert read_captions(path, format="clotho").format == "clotho"


# -- manifests and WavCaps ----------------------------------------------------------------------
def test_csv_manifest_paths_resolve_against_its_folder_or_audio_dir(tmp_path):
    touch(tmp_path / "data" / "clips", "a.wav")
    touch(tmp_path / "elsewhere" / "clips", "b.ogg")
    absolute = tmp_path / "elsewhere" / "clips" / "b.ogg"
    text = f"path,caption,extra\nclips/a.wav,a dog,1\n{absolute},rain,2\nclips/a.wav,a cat,3\n"
    path = write(tmp_path / "data", "m.csv", text)
    table = read_captions(path)
    assert table.format == "manifest"
    assert [(c.clip_id, c.captions) for c in table.clips] == [
        ("clips/a.wav", ("a dog", "a cat")),
        (str(absolute), ("rain",)),
    ]
    assert [c.audio_path for c in table.clips] == [
        str(tmp_path / "data/clips/a.wav"),
        str(absolute),
    ]
    moved = read_captions(path, tmp_path / "elsewhere")
    assert [c.audio_path for c in moved.clips] == [None, str(absolute)]


def test_jsonl_manifest_with_lists_and_bad_lines(tmp_path):
    lines = [
        {"audio": "a.wav", "captions": ["one", "two", ""]},
        {"Audio_Path": "b.wav", "caption": "three"},
        "not json {",
        {"file_name": "c.wav", "text": ["four"]},
        {"wav": "d.wav", "caption_2": "six", "caption_1": "five"},
        {"audio": "e.wav"},
        [1, 2],
        {"audio": "f.wav", "caption": 7},
    ]
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    touch(tmp_path / "audio", "b.wav")
    path = write(tmp_path, "m.jsonl", text)
    table = read_captions(path, tmp_path / "audio")
    assert table.format == "manifest"
    assert [(c.clip_id, c.captions) for c in table.clips] == [
        ("a.wav", ("one", "two")),
        ("b.wav", ("three",)),
        ("c.wav", ("four",)),
        ("d.wav", ("five", "six")),
    ]
    assert table.clips[1].audio_path == str(tmp_path / "audio" / "b.wav")
    assert table.problems[0] == f"{path}:1: captions[2] is empty; left out"
    assert table.problems[1].startswith(f"{path}:3: not valid JSON")
    assert table.problems[2].startswith(f"{path}:6: needs an audio field")
    assert table.problems[3:] == [
        f"{path}:7: not a JSON object; skipped",
        f"{path}:8: caption is not text (7); left out",
        f"{path}:8: no caption; skipped",
    ]


@pytest.mark.parametrize("wrap", [lambda r: r, lambda r: {"data": r}])
def test_json_manifest_list_or_data(tmp_path, wrap):
    records = [{"wav": "a.wav", "caption": "one"}, {"wav": "b.wav", "caption": ["two", "three"]}]
    table = read_captions(write(tmp_path, "m.json", json.dumps(wrap(records))))
    assert table.format == "manifest"
    assert [c.captions for c in table.clips] == [("one",), ("two", "three")]


def test_wavcaps_json_finds_flac_by_id(tmp_path):
    doc = {
        "num_captions_per_audio": 1,
        "data": [
            {"id": "Y---1_cCGK4M.wav", "caption": "a bell", "audio": "wav_path", "duration": 10.0},
            {"id": 180913, "file_name": "UK Mello.wav", "caption": "birds", "audio": "wav_path"},
            {"id": "lost", "caption": "nothing here"},
            {"id": "", "caption": "no id"},
        ],
    }
    touch(tmp_path / "audio", "Y---1_cCGK4M.flac", "180913.flac")
    path = write(tmp_path, "fsd_final.json", json.dumps(doc))
    table = read_captions(path, tmp_path / "audio")
    assert table.format == "wavcaps"
    assert [c.clip_id for c in table.clips] == ["Y---1_cCGK4M.wav", "180913", "lost"]
    names = [c.audio_path and Path(c.audio_path).name for c in table.clips]
    assert names == ["Y---1_cCGK4M.flac", "180913.flac", None]
    assert table.problems == [f"{path}:data[3]: no id; skipped"]
    with pytest.raises(UserError, match="--format manifest does not fit"):
        read_captions(path, format="manifest")


def test_broken_json_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not valid JSON"):
        read_captions(write(tmp_path, "m.json", '{"data": [\n{"id": 1,,}\n'))


@pytest.mark.parametrize("head", [b"OggS\x00\x02\x00\x00", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_a_binary_file_is_refused_in_printable_words(tmp_path, head):
    """An .ogg given as CAPTIONS put ~600 bytes of binary into the error before."""
    path = tmp_path / "clip.ogg"
    path.write_bytes(head + bytes(range(256)) * 4 + b"\n,\xff\xfe" * 50)
    with pytest.raises(UserError) as e:
        read_captions(path)
    msg = str(e.value)
    assert "looks like a binary file" in msg and msg.isprintable() and len(msg) < 300, msg
    assert ("audio file?" in msg) == head.startswith(b"OggS")


def test_utf16_text_is_not_taken_for_binary(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("file_name,caption_1\na.wav,a dog\n".encode("utf-16"))
    assert read_captions(path).clips[0].captions == ("a dog",)
