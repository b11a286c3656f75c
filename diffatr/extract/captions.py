"""Read a dataset's caption file into clips: Clotho, AudioCaps (official and Mei's repackaging),
WavCaps JSON, or a generic manifest, recognised from the header with format "auto".

Reads: one caption file (CSV, JSONL or JSON; any encoding `caption_files.decode_text` handles)
and the listing of the audio folder. Writes: nothing; returns a `CaptionTable`.

Formats (the header decides; names are matched after stripping spaces and lower-casing):

    clotho         file_name,caption_1..caption_N (any N; Mei's Clotho and AudioCaps val/test)
                   one row per clip; clip id = file_name; audio = audio_dir/file_name
    audiocaps      audiocap_id,youtube_id,start_time,caption (official; one row per caption)
                   rows grouped by (youtube_id, start_time) in first-appearance order;
                   clip id = "{youtube_id}_{start_time}"; audio = the first that exists of
                   {youtube_id}_{start_time}.wav|.flac, Y{youtube_id}.wav|.flac
    audiocaps_mei  file_name,caption (Mei's AudioCaps train; one row per caption, grouped by
                   file_name). A clotho-layout file whose ids all look like Y<11-char id>.wav is
                   reported as audiocaps_mei too.
    wavcaps        JSON {"data": [{"id", "caption", ...}]}; see `manifest.py`
    manifest       CSV, JSONL or JSON with an audio path field and caption fields; see
                   `manifest.py` (the only format whose paths resolve without audio_dir)

Audio lookup: with audio_dir None every audio_path is None (text-only extraction), except for
manifests. A name with an audio extension also matches the same stem with another one
(a.wav -> a.flac, .ogg, .mp3), so converted copies are found.

Rules for bad rows (each goes to `problems` as "file:line: why", and the rest is read):
- a row with more or fewer fields than the header, or an empty file_name / youtube_id /
  start_time, or a start_time that is not a number: skipped;
- an empty (or whitespace-only) caption: that caption left out; a row with no caption: skipped;
- clotho: a file_name seen before whose captions all repeat the earlier row: skipped; one with
  new captions: its captions are appended to the first row's clip (kept at the first row's
  position) and the merge is listed in `notes`;
- audiocaps: a repeated audiocap_id: skipped.
Captions are kept exactly as written (a DCASE submission identifies queries by their text).
A file with no usable clip at all, or with a header no format accepts, raises UserError.
"""

import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError
from .caption_files import (
    CAPTION_N,
    AudioResolver,
    CaptionTable,
    ClipEntry,
    ClipGrouper,
    audio_candidates,
    csv_records,
    decode_text,
)
from .manifest import (
    AUDIO_FIELDS,
    CAPTION_FIELDS,
    manifest_fields,
    read_json,
    read_manifest_csv,
)

__all__ = ["CAPTION_FORMATS", "CaptionTable", "ClipEntry", "read_captions"]

CAPTION_FORMATS = ("auto", "clotho", "audiocaps", "audiocaps_mei", "wavcaps", "manifest")
AUDIOCAPS_HEADER = ("audiocap_id", "youtube_id", "start_time", "caption")
ACCEPTED = (
    "clotho `file_name,caption_1,...,caption_N`; "
    "audiocaps `audiocap_id,youtube_id,start_time,caption`; "
    "audiocaps_mei `file_name,caption`; "
    'wavcaps JSON `{"data": [{"id", "caption"}]}`; '
    f"manifest CSV/JSONL/JSON with an audio field ({'|'.join(AUDIO_FIELDS)}) "
    f"and caption fields ({'|'.join(CAPTION_FIELDS)}|caption_N)"
)
_MEI_AUDIOCAPS_ID = re.compile(r"Y[A-Za-z0-9_-]{11}\.(wav|flac)")
# Which layouts each requested format accepts, and the format reported for each.
_COMPATIBLE = {
    "clotho": {"clotho": "clotho"},
    "audiocaps": {
        "audiocaps": "audiocaps",
        "audiocaps_mei": "audiocaps_mei",
        "clotho": "audiocaps_mei",
    },
    "audiocaps_mei": {"audiocaps_mei": "audiocaps_mei", "clotho": "audiocaps_mei"},
    "wavcaps": {"wavcaps": "wavcaps"},
    "manifest": {"clotho": "manifest", "audiocaps_mei": "manifest", "manifest": "manifest"},
}


def _caption_columns(header: list[str]) -> list[tuple[str, int]]:
    """(name, column) of the caption_N columns, in N order."""
    cols = [(int(m.group(1)), i) for i, h in enumerate(header) if (m := CAPTION_N.fullmatch(h))]
    return [(f"caption_{n}", i) for n, i in sorted(cols)]


def csv_layout(header: list[str]) -> str | None:
    """The layout a CSV header belongs to: clotho, audiocaps, audiocaps_mei, manifest or None."""
    names = set(header)
    if set(AUDIOCAPS_HEADER) <= names:
        return "audiocaps"
    if names == {"file_name", "caption"} and len(header) == 2:
        return "audiocaps_mei"
    caption_cols = _caption_columns(header)
    if caption_cols and names == {"file_name"} | {n for n, _ in caption_cols}:
        return "clotho"
    audio, captions = manifest_fields(header)
    return "manifest" if audio and captions else None


def _rows(
    name: str, records: Iterator[tuple[int, list[str]]], width: int, problems: list[str]
) -> Iterator[tuple[int, list[str]]]:
    """Records with the header's field count; blank lines skipped, others reported."""
    for line, row in records:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != width:
            problems.append(f"{name}:{line}: {len(row)} fields, the header has {width}; skipped")
            continue
        yield line, row


def _read_clotho(name, header, records, resolver, problems, notes) -> list[ClipEntry]:
    file_col = header.index("file_name")
    caption_cols = _caption_columns(header)
    clips, first_line = ClipGrouper(), {}
    for line, row in _rows(name, records, len(header), problems):
        clip_id = row[file_col].strip()
        if not clip_id:
            problems.append(f"{name}:{line}: empty file_name; skipped")
            continue
        captions = []
        for col_name, col in caption_cols:
            if row[col].strip():
                captions.append(row[col])
            else:
                problems.append(f"{name}:{line}: {col_name} is empty; left out")
        if not captions:
            problems.append(f"{name}:{line}: no caption; skipped")
            continue
        known = clips.get(clip_id)
        if known is not None:
            first = first_line[clip_id]
            if set(captions) <= set(known.captions):
                problems.append(f"{name}:{line}: repeats {clip_id!r} of line {first}; skipped")
                continue
            notes.append(
                f"{name}:{line}: {clip_id!r} also on line {first}; captions added to that clip"
            )
        else:
            first_line[clip_id] = line
        path = None if known else resolver.find(audio_candidates(clip_id), clip_id=clip_id)
        clips.add(clip_id, path, captions)
    return clips.entries()


def _read_audiocaps(name, header, records, resolver, problems) -> list[ClipEntry]:
    id_col, yt_col, start_col, cap_col = (header.index(h) for h in AUDIOCAPS_HEADER)
    clips, seen_ids = ClipGrouper(), {}
    for line, row in _rows(name, records, len(header), problems):
        cap_id, yt, start, caption = (
            row[id_col].strip(),
            row[yt_col].strip(),
            row[start_col],
            row[cap_col],
        )
        start = start.strip()
        if not yt or not start:
            problems.append(f"{name}:{line}: empty youtube_id or start_time; skipped")
            continue
        try:
            float(start)
        except ValueError:
            problems.append(f"{name}:{line}: start_time {start!r} is not a number; skipped")
            continue
        if cap_id and cap_id in seen_ids:
            problems.append(
                f"{name}:{line}: audiocap_id {cap_id} repeats line {seen_ids[cap_id]}; skipped"
            )
            continue
        seen_ids[cap_id] = line
        if not caption.strip():
            problems.append(f"{name}:{line}: empty caption (audiocap_id {cap_id}); skipped")
            continue
        clip_id = f"{yt}_{start}"
        path = None
        if clip_id not in clips:
            names = [f"{clip_id}.wav", f"{clip_id}.flac", f"Y{yt}.wav", f"Y{yt}.flac"]
            path = resolver.find(names, clip_id=clip_id)
        clips.add(clip_id, path, [caption])
    return clips.entries()


def _read_audiocaps_mei(name, header, records, resolver, problems) -> list[ClipEntry]:
    file_col, cap_col = header.index("file_name"), header.index("caption")
    clips = ClipGrouper()
    for line, row in _rows(name, records, len(header), problems):
        clip_id, caption = row[file_col].strip(), row[cap_col]
        if not clip_id:
            problems.append(f"{name}:{line}: empty file_name; skipped")
            continue
        if not caption.strip():
            problems.append(f"{name}:{line}: empty caption; skipped")
            continue
        found = clip_id in clips
        path = None if found else resolver.find(audio_candidates(clip_id), clip_id=clip_id)
        clips.add(clip_id, path, [caption])
    return clips.entries()


def _check_format(name: str, requested: str, layout: str, header: str) -> str:
    """The format to report, or UserError when the file does not fit the requested one."""
    if requested == "auto":
        return layout
    reported = _COMPATIBLE.get(requested, {}).get(layout)
    if reported is None:
        raise UserError(
            f"{name}: --format {requested} does not fit this file (header {header}); "
            "use --format auto or the file's own format"
        )
    return reported


def read_captions(
    path: str | os.PathLike, audio_dir: str | os.PathLike | None = None, format: str = "auto"
) -> CaptionTable:
    """Read one caption file into clips (see the module docstring for formats and rules)."""
    if format not in CAPTION_FORMATS:
        raise UserError(f"--format {format}: unknown; choose one of {', '.join(CAPTION_FORMATS)}")
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{name}: cannot read the caption file ({e.strerror})") from None
    text, encoding, notes = decode_text(data, name)
    resolver = AudioResolver(audio_dir)
    problems: list[str] = []
    if text.lstrip()[:1] in ("{", "["):
        layout, clips = read_json(name, text, resolver, problems)
        shown = "WavCaps JSON" if layout == "wavcaps" else "JSON records"
        used = _check_format(name, format, layout, shown)
    else:
        delimiter = "\t" if name.lower().endswith(".tsv") else ","
        records = csv_records(text, name, delimiter)
        header_line, raw = next(((n, r) for n, r in records if any(c.strip() for c in r)), (0, []))
        header = [h.strip().lower() for h in raw]
        shown = delimiter.join(raw)[:200] if raw else "(empty file)"  # repr below: printable
        layout = csv_layout(header)
        if layout is None:
            raise UserError(
                f"{name}:{header_line}: unrecognised caption file header {shown!r}; "
                f"accepted: {ACCEPTED}"
            )
        used = _check_format(name, format, layout, repr(shown))
        if used == "manifest":
            clips = read_manifest_csv(name, header, records, resolver, problems)
        elif layout == "audiocaps":
            clips = _read_audiocaps(name, header, records, resolver, problems)
        elif layout == "audiocaps_mei":
            clips = _read_audiocaps_mei(name, header, records, resolver, problems)
        else:
            clips = _read_clotho(name, header, records, resolver, problems, notes)
            mei_ids = clips and all(_MEI_AUDIOCAPS_ID.fullmatch(c.clip_id) for c in clips)
            if used == "clotho" and format == "auto" and mei_ids:
                used = "audiocaps_mei"
    if not clips:
        first = f"; first problem: {problems[0]}" if problems else ""
        raise UserError(f"{name}: no usable clip ({len(problems)} problems{first})")
    return CaptionTable(used, clips, problems, encoding, notes, resolver.missed)
