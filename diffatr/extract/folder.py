"""A sound library without captions: every audio file under a folder, as caption-less clips
(`diffatr extract --audio-dir DIR --out LIB.h5 --audio-only` with no caption file).

Reads: the listing of the folder tree (never the files). Writes: nothing; returns a
`CaptionTable` whose clips have no captions, so the pipeline (`run.py`) treats the folder exactly
as it treats a caption file's clips (resume, bad-clip reporting, torchrun sharding).

Rules:
- every regular file (or link to one) under the folder, recursively, whose extension (any case)
  is one of LIBRARY_EXTS: what `audio_io.load_audio` decodes through libsndfile, plus the
  compressed formats it hands to audioread;
- hidden files and folders (a leading ".") are left out: editor and OS droppings (".DS_Store",
  "._x.wav" resource forks) are not sounds;
- clip id = the path relative to the folder, with "/" separators, so ids are unique and the same
  on every machine; clips are in sorted id order, so every torchrun rank and every resumed run
  sees one order;
- a folder link is followed once (a loop of links is not walked twice).
"""

import os
from pathlib import Path

from ..errors import UserError
from .caption_files import CaptionTable, ClipEntry

LIBRARY_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aif", ".aiff", ".aifc", ".m4a", ".aac")
FOLDER_FORMAT = "folder"  # CaptionTable.format of a caption-less folder


def library_files(audio_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """(clip id, absolute path) of every audio file under `audio_dir`, sorted by id."""
    root = Path(audio_dir)
    if not root.is_dir():
        raise UserError(f"--audio-dir {audio_dir}: no such folder")
    root = root.absolute()
    found: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()  # (device, inode) of folders walked: link loops
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith(".") or not name.lower().endswith(LIBRARY_EXTS):
                continue
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                found.append((os.path.relpath(path, root).replace(os.sep, "/"), path))
    found.sort()
    return found


def folder_table(audio_dir: str | os.PathLike) -> CaptionTable:
    """The folder's audio files as clips without captions (module docstring)."""
    files = library_files(audio_dir)
    if not files:
        raise UserError(
            f"--audio-dir {audio_dir}: no audio files in it or below "
            f"({', '.join(e[1:] for e in LIBRARY_EXTS)})"
        )
    clips = [ClipEntry(clip_id, path, ()) for clip_id, path in files]
    return CaptionTable(format=FOLDER_FORMAT, clips=clips, problems=[], encoding="")
