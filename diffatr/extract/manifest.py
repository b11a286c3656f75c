"""Generic manifests (CSV, JSONL, JSON) and WavCaps JSON: records naming an audio file and its
captions.

Reads: the decoded text of one manifest and the listing of the audio folders. Writes: nothing.

Manifest fields (names matched after stripping spaces and lower-casing):
    audio     the first present of AUDIO_FIELDS: audio_path, audio, path, wav, file_name,
              filename, file
    captions  every caption_N field (in N order) if there is one, else the first present of
              CAPTION_FIELDS: captions, caption, text. In JSON a value may be a string or a list
              of strings; in a CSV each cell is one caption.
The clip id is the audio value as written; records naming the same audio are one clip (captions
in record order, as one-row-per-caption manifests expect). A relative audio path resolves
against audio_dir when given, else against the manifest's own folder; an absolute one is used
as is. JSON may be one record per line (JSONL), a list of records, or {"data": [records]}.

WavCaps (Mei et al., 2023): {"data": [{"id", "caption", "audio": "wav_path", ...}]} whose records
carry no usable path ("audio" is the placeholder "wav_path"). Clip id = id; the audio is looked
up under audio_dir (never the JSON's folder) as <id stem>.flac, <id stem>.wav, then id itself
(the released archives: AudioSet_SL id "Y<yt>.wav" -> "Y<yt>.flac", FreeSound "123" -> "123.flac").
"""

import json
import os
from collections.abc import Iterable, Iterator

from ..errors import UserError
from .caption_files import CAPTION_N, AudioResolver, ClipEntry, ClipGrouper, audio_candidates

AUDIO_FIELDS = ("audio_path", "audio", "path", "wav", "file_name", "filename", "file")
CAPTION_FIELDS = ("captions", "caption", "text")
WAVCAPS_PLACEHOLDER = "wav_path"


def manifest_fields(names: Iterable[str]) -> tuple[str | None, list[str]]:
    """(audio field, caption fields) of a record's or header's names, per the module rules."""
    names = list(names)
    audio = next((f for f in AUDIO_FIELDS if f in names), None)
    numbered = sorted((int(m.group(1)), n) for n in names if (m := CAPTION_N.fullmatch(n)))
    if numbered:
        return audio, [n for _, n in numbered]
    return audio, [f for f in CAPTION_FIELDS if f in names][:1]


def _captions(rec: dict, fields: list[str], where: str, problems: list[str]) -> list[str]:
    out = []
    for key in fields:
        value = rec.get(key)
        items = value if isinstance(value, list) else [value]
        for j, caption in enumerate(items):
            label = f"{key}[{j}]" if isinstance(value, list) else key
            if caption is not None and not isinstance(caption, str):
                problems.append(f"{where}: {label} is not text ({caption!r}); left out")
            elif caption is None or not caption.strip():
                problems.append(f"{where}: {label} is empty; left out")
            else:
                out.append(caption)
    return out


def _add_manifest_record(
    rec: dict,
    where: str,
    clips: ClipGrouper,
    resolver: AudioResolver,
    base: str,
    problems: list[str],
) -> None:
    audio_field, caption_fields = manifest_fields(rec)
    if audio_field is None or not caption_fields:
        problems.append(
            f"{where}: needs an audio field ({'|'.join(AUDIO_FIELDS)}) and a caption field "
            f"({'|'.join(CAPTION_FIELDS)}|caption_N), has {sorted(rec)}; skipped"
        )
        return
    audio = rec[audio_field]
    if not isinstance(audio, str) or not audio.strip():
        problems.append(f"{where}: {audio_field} is empty or not text; skipped")
        return
    clip_id = audio.strip()
    captions = _captions(rec, caption_fields, where, problems)
    if not captions:
        problems.append(f"{where}: no caption; skipped")
        return
    found = clip_id in clips
    path = None if found else resolver.find(audio_candidates(clip_id), base, clip_id)
    clips.add(clip_id, path, captions)


def _base(name: str, resolver: AudioResolver) -> str:
    return resolver.audio_dir or os.path.dirname(os.path.abspath(name))


def read_manifest_csv(
    name: str,
    header: list[str],
    records: Iterator[tuple[int, list[str]]],
    resolver: AudioResolver,
    problems: list[str],
) -> list[ClipEntry]:
    """A CSV manifest: one row per clip or per caption (rows of one audio path are grouped)."""
    clips, base = ClipGrouper(), _base(name, resolver)
    for line, row in records:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(
                f"{name}:{line}: {len(row)} fields, the header has {len(header)}; skipped"
            )
            continue
        rec = dict(zip(header, row, strict=True))
        _add_manifest_record(rec, f"{name}:{line}", clips, resolver, base, problems)
    return clips.entries()


def _is_wavcaps(items: list) -> bool:
    """{"data": [...]} whose first record has id and caption but no usable audio path."""
    first = items[0] if items else None
    if not isinstance(first, dict):
        return False
    first = {str(k).strip().lower(): v for k, v in first.items()}
    if "id" not in first or "caption" not in first:
        return False
    paths = [first.get(f) for f in AUDIO_FIELDS[:4]]
    return all(p in (None, "", WAVCAPS_PLACEHOLDER) for p in paths)


def _add_wavcaps_record(
    rec: dict, where: str, clips: ClipGrouper, resolver: AudioResolver, problems: list[str]
) -> None:
    clip_id = rec.get("id")
    if clip_id is None or not str(clip_id).strip():
        problems.append(f"{where}: no id; skipped")
        return
    clip_id = str(clip_id).strip()
    captions = _captions(rec, ["caption"], where, problems)
    if not captions:
        problems.append(f"{where}: no caption; skipped")
        return
    path = None
    if clip_id not in clips:
        stem, ext = os.path.splitext(clip_id)
        stem = stem if ext.lower() in (".wav", ".flac") else clip_id
        names = [stem + ".flac", stem + ".wav", clip_id]
        if isinstance(rec.get("file_name"), str):
            names.append(rec["file_name"])
        path = resolver.find(names, clip_id=clip_id)
    clips.add(clip_id, path, captions)


class _BadLine(str):
    """A JSONL line that did not parse (kept in place so problems stay in line order)."""


def _json_lines(name: str, text: str, error: json.JSONDecodeError) -> list[tuple[str, object]]:
    """Records of a JSONL file as (where, record); UserError if it is not JSONL either."""
    out: list[tuple[str, object]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((f"{name}:{number}", json.loads(line)))
        except json.JSONDecodeError as e:
            if not out:
                raise UserError(
                    f"{name}:{error.lineno}: not valid JSON or JSONL ({error.msg})"
                ) from None
            out.append((f"{name}:{number}", _BadLine(e.msg)))
    return out


def read_json(
    name: str, text: str, resolver: AudioResolver, problems: list[str]
) -> tuple[str, list[ClipEntry]]:
    """A JSON/JSONL manifest or a WavCaps JSON: ("manifest" | "wavcaps", clips)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        records, wavcaps = _json_lines(name, text, e), False
    else:
        if isinstance(doc, dict) and isinstance(doc.get("data"), list):
            items, prefix = doc["data"], "data"
            wavcaps = _is_wavcaps(items)
        elif isinstance(doc, list):
            items, prefix, wavcaps = doc, "", False
        else:
            raise UserError(
                f'{name}: a JSON manifest must be a list of records or {{"data": [records]}}'
            )
        records = [(f"{name}:{prefix}[{i}]", rec) for i, rec in enumerate(items)]
    layout = "wavcaps" if wavcaps else "manifest"
    clips, base = ClipGrouper(), _base(name, resolver)
    for where, rec in records:
        if isinstance(rec, _BadLine):
            problems.append(f"{where}: not valid JSON ({rec}); skipped")
            continue
        if not isinstance(rec, dict):
            problems.append(f"{where}: not a JSON object; skipped")
            continue
        rec = {str(k).strip().lower(): v for k, v in rec.items()}
        if layout == "wavcaps":
            _add_wavcaps_record(rec, where, clips, resolver, problems)
        else:
            _add_manifest_record(rec, where, clips, resolver, base, problems)
    return layout, clips.entries()
