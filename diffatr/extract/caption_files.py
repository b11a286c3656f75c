"""What every caption-file reader shares: the result types, byte decoding, CSV records with
line numbers, audio file lookup, and grouping rows into clips.

Reads: caption file bytes and directory listings of the audio folders. Writes: nothing.

Decoding rule (`decode_text`): a UTF-8 BOM or UTF-16 BOM is honoured; otherwise strict UTF-8 is
tried first; a file that is not UTF-8 is decoded as ISO-8859-1 (Clotho ships it), or as cp1252
when it has bytes 0x80-0x9f that cp1252 maps to printable characters. A file that mixes valid
UTF-8 sequences with invalid bytes is decoded line by line and every line that needed the
single-byte fallback is listed in `CaptionTable.notes`. The encoding used is always recorded.
"""

import codecs
import csv
import io
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import UserError

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")
# A well-formed UTF-8 multi-byte sequence: its presence in a non-UTF-8 file means the file mixes
# encodings (decode line by line) rather than being single-byte throughout.
_UTF8_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
_C1 = re.compile(rb"[\x80-\x9f]")
CAPTION_N = re.compile(r"caption_(\d+)")  # numbered caption columns: caption_1 .. caption_N


@dataclass(frozen=True)
class ClipEntry:
    """One clip: its id (stored in /audio/ids), its audio file if found, and its captions."""

    clip_id: str  # unique; the file name as given ("Y0123.wav", "{youtube_id}_{start}", ...)
    audio_path: str | None  # absolute path of an existing file, None if not found / no audio_dir
    captions: tuple[str, ...]  # exactly as written in the file (not stripped or re-cased)


@dataclass
class CaptionTable:
    """The clips of one caption file, in first-appearance order, and what was left out."""

    format: str  # the detected/used format, one of CAPTION_FORMATS (never "auto")
    clips: list[ClipEntry]  # input order (first appearance)
    problems: list[str]  # rows or captions that were left out: "file:line: why"
    encoding: str  # "utf-8", "utf-8-sig", "iso-8859-1", "cp1252", "utf-16", or a mix
    notes: list[str] = field(default_factory=list)  # kept data the user should know about
    looked_for: dict[str, list[str]] = field(default_factory=dict)  # clip id -> paths tried

    @property
    def n_captions(self) -> int:
        return sum(len(c.captions) for c in self.clips)

    @property
    def missing_audio(self) -> list[str]:
        """Ids of clips whose audio file was not found (or no audio folder was given)."""
        return [c.clip_id for c in self.clips if c.audio_path is None]


def _single_byte(data: bytes) -> tuple[str, str]:
    """ISO-8859-1, unless C1 bytes are present and form valid cp1252 (then cp1252)."""
    if _C1.search(data):
        try:
            return data.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            pass
    return data.decode("iso-8859-1"), "iso-8859-1"


_AUDIO_MAGIC = (b"OggS", b"RIFF", b"fLaC", b"ID3", b"\xff\xfb", b"\xff\xf3", b"FORM")


def refuse_binary(data: bytes, name: str) -> None:
    """UserError for a file that is not text (an audio file given as CAPTIONS, say), showing its
    first bytes as printable escapes: the bytes themselves would garble the terminal."""
    head = data[:4096]
    utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    audio = head.startswith(_AUDIO_MAGIC)
    if not audio and (utf16 or b"\x00" not in head):
        return
    what = "an audio file?" if audio else "not text"
    raise UserError(
        f"{name}: looks like a binary file ({what}; it starts {head[:16]!r}), not a caption "
        "file: give the captions' CSV, JSONL or JSON as CAPTIONS"
    )


def decode_text(data: bytes, name: str = "") -> tuple[str, str, list[str]]:
    """Decode a caption file: (text, encoding, notes about lines decoded by fallback)."""
    refuse_binary(data, name)
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[len(codecs.BOM_UTF8) :].decode("utf-8"), "utf-8-sig", []
        except UnicodeDecodeError:
            data = data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16", []
        except UnicodeDecodeError as e:
            raise UserError(f"{name}: starts with a UTF-16 mark but is not UTF-16 ({e})") from None
    try:
        return data.decode("utf-8"), "utf-8", []
    except UnicodeDecodeError:
        pass
    if not _UTF8_MULTIBYTE.search(data):
        text, encoding = _single_byte(data)
        return text, encoding, []
    parts, notes, fallbacks = [], [], set()
    for number, line in enumerate(data.split(b"\n"), 1):
        try:
            parts.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            text, encoding = _single_byte(line)
            parts.append(text)
            fallbacks.add(encoding)
            notes.append(f"{name}:{number}: not valid UTF-8; decoded as {encoding}")
    return "\n".join(parts), "utf-8+" + "+".join(sorted(fallbacks)), notes


def csv_records(text: str, name: str, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) per CSV record; quoted fields may hold commas and newlines.

    Quoting errors (a stray quote that would swallow the rest of the file) raise UserError.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise UserError(
                f"{name}:{start}: broken CSV quoting ({e}); fix the quotes in this row"
            ) from None
        yield start, row
        start = reader.line_num + 1


def audio_candidates(name: str) -> list[str]:
    """The file name as given, then the same stem with the other audio extensions."""
    stem, ext = os.path.splitext(name)
    if ext.lower() not in AUDIO_EXTS:
        return [name]
    return [name] + [stem + e for e in AUDIO_EXTS if e != ext.lower()]


class AudioResolver:
    """Find audio files under a folder, listing each directory once (fast for 400k clips).

    Names are compared in Unicode NFC, so "café.wav" written in the CSV finds a file whose name
    the file system stores decomposed (as macOS does); the path returned is the real one.
    """

    def __init__(self, audio_dir: str | os.PathLike | None):
        if audio_dir is not None and not os.path.isdir(audio_dir):
            raise UserError(f"--audio-dir {audio_dir}: not a folder; give the folder of the clips")
        self.audio_dir = None if audio_dir is None else os.path.abspath(audio_dir)
        self._listing: dict[str, dict[str, str]] = {}  # folder -> {NFC name: real name}
        self.missed: dict[str, list[str]] = {}  # clip id -> the paths tried, none found

    def _real_name(self, parent: str, base: str) -> str | None:
        names = self._listing.get(parent)
        if names is None:
            try:
                names = {unicodedata.normalize("NFC", n): n for n in os.listdir(parent)}
            except OSError:
                names = {}
            self._listing[parent] = names
        return names.get(unicodedata.normalize("NFC", base))

    def find(
        self, names: Sequence[str], base: str | None = None, clip_id: str | None = None
    ) -> str | None:
        """The first of `names` (relative to `base`, default audio_dir) that exists, or None;
        the paths tried for a `clip_id` not found are kept in `missed` (for its warning)."""
        base = self.audio_dir if base is None else os.path.abspath(base)
        if base is None:
            return None
        tried = []
        for n in names:
            parent, name = os.path.split(os.path.normpath(os.path.join(base, n)))
            real = self._real_name(parent, name)
            if real is not None:
                return os.path.join(parent, real)
            tried.append(os.path.join(parent, name))
        if clip_id is not None:
            self.missed[clip_id] = tried
        return None


@dataclass
class _Clip:
    audio_path: str | None
    captions: list[str]


class ClipGrouper:
    """Collect captions per clip id in first-appearance order."""

    def __init__(self) -> None:
        self._clips: dict[str, _Clip] = {}

    def get(self, clip_id: str) -> _Clip | None:
        return self._clips.get(clip_id)

    def add(self, clip_id: str, audio_path: str | None, captions: Sequence[str]) -> None:
        """Append captions to the clip, creating it (with this audio path) at first sight."""
        clip = self._clips.get(clip_id)
        if clip is None:
            self._clips[clip_id] = _Clip(audio_path, list(captions))
        else:
            clip.captions.extend(captions)

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self._clips

    def entries(self) -> list[ClipEntry]:
        return [ClipEntry(k, c.audio_path, tuple(c.captions)) for k, c in self._clips.items()]
