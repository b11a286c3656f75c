"""Which file, if any, a request for `/audio/<name>` may read: only files under the served
folder.

Reads: the file system (stat, realpath). Writes nothing.

Refused (None): an empty name, an absolute path, a drive or backslash path, any `..` or `.`
segment, a NUL byte, a name whose real path (links resolved) lies outside the folder's real
path, and anything that is not a regular file. A clip id whose file was converted (a.wav stored,
a.flac on disk) finds the converted file, as `search` does (`audio_candidates`).
"""

import os

from ..extract.caption_files import audio_candidates


def _safe_name(name: str) -> bool:
    if not name or "\0" in name or "\\" in name or name.startswith("/"):
        return False
    if len(name) > 1 and name[1] == ":":  # C:... on any platform
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def served_file(root: str, name: str) -> str | None:
    """The real path of `name` under `root`, or None if it must not be served."""
    if not root or not _safe_name(name):
        return None
    base = os.path.realpath(root)
    for candidate in audio_candidates(name):
        if not _safe_name(candidate):
            continue
        path = os.path.realpath(os.path.join(base, *candidate.split("/")))
        if os.path.commonpath([base, path]) != base:
            return None  # a link out of the folder
        if os.path.isfile(path):
            return path
    return None
