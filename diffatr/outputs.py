"""Output paths checked before the work: a bad `--out` fails in one line, not after an epoch.

Reads: the file system around an output path (and, for exports, the folder's export record).
Writes: nothing but a probe file, created and removed at once in an output's existing folder.

Every command that writes calls one of these first, before it loads a model or a cache:
    check_output_file(path, option)   a file is meant: not a folder, its folder creatable and
                                      writable, an existing file replaceable
    check_output_dir(path, option)    a folder is meant: not a file, creatable and writable
    check_outputs(files, folders)     a command's outputs, option -> path, all at once
    check_export_targets(folder, names, source, overwrite)
                                      `cache export`: files another cache exported into the same
                                      folder are not silently replaced (the record is
                                      `EXPORT_RECORD` in the folder)
Each refusal is a `UserError` naming the path and what to do; nothing is created by a check
(missing folders are made by the atomic write, once the work succeeded).
"""

import json
import os
import tempfile
from pathlib import Path

from .errors import UserError

EXPORT_RECORD = ".diffatr-export.json"  # {file name: the cache it was exported from}


def _existing_ancestor(path: Path) -> Path:
    """The nearest existing path at or above `path` (what a mkdir -p would start from)."""
    here = path.absolute()
    while not os.path.lexists(here) and here != here.parent:
        here = here.parent
    return here


def _probe(folder: Path) -> str | None:
    """Why a file cannot be created in the existing `folder`, or None. A real create, because
    permission bits do not tell the truth for root, read-only mounts or full quotas."""
    try:
        fd, name = tempfile.mkstemp(prefix=".diffatr-probe-", dir=folder)
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    os.unlink(name)
    return None


def _check_parent(path: Path, option: str) -> None:
    """The folder that will hold `path` exists as a writable folder, or can be made as one."""
    base = _existing_ancestor(path.parent)
    if not base.is_dir():
        raise UserError(
            f"{path}: cannot be created: {base} is a file, not a folder; choose another {option}"
        )
    problem = _probe(base)
    if problem is not None:
        raise UserError(f"{path}: cannot write in {base} ({problem}); choose another {option}")


def check_output_file(path: str | os.PathLike, option: str = "output") -> None:
    """Refuse, in one line, an output file that could not be written (module docstring).

    `option` names where the path came from in the message ("--out", "--json")."""
    path = Path(path)
    if str(path) in ("", "."):
        raise UserError(f"{option}: an empty file name; give a file to write")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; {option} takes a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{path}: exists and is not writable; choose another {option}")
    _check_parent(path, option)


def check_output_dir(path: str | os.PathLike, option: str = "output") -> None:
    """Refuse, in one line, an output folder that could not be made or written into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: is a file; {option} takes a folder")
    if path.is_dir():
        problem = _probe(path)
        if problem is not None:
            raise UserError(f"{path}: cannot write in it ({problem}); choose another {option}")
        return
    _check_parent(path, option)


def check_outputs(files: dict | None = None, folders: dict | None = None) -> None:
    """A command's outputs, checked at its start: `files` / `folders` map the option that gave
    each path to the path (None or "" = not given)."""
    for option, path in (files or {}).items():
        if path:
            check_output_file(path, option)
    for option, path in (folders or {}).items():
        if path:
            check_output_dir(path, option)


def read_export_record(folder: Path) -> dict:
    """The folder's record of which cache each exported file came from ({} if none)."""
    try:
        record = json.loads((folder / EXPORT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def export_source(cache: str | os.PathLike) -> str:
    """How the record names a cache: its resolved path."""
    return str(Path(cache).resolve())


def check_export_targets(
    folder: str | os.PathLike, names: list[str], source: str | os.PathLike, overwrite: bool
) -> None:
    """Refuse to replace files in `folder` that came from another cache (or from no export
    diffatr recorded) unless `overwrite`; re-exporting the same cache replaces its own files."""
    folder = Path(folder)
    check_output_dir(folder, "--out")
    if overwrite or not folder.is_dir():
        return
    record, mine = read_export_record(folder), export_source(source)
    clash = [n for n in names if (folder / n).exists() and record.get(n) != mine]
    if clash:
        other = record.get(clash[0])
        came = f"exported from {other}" if other else "not exported from this cache"
        raise UserError(
            f"{folder / clash[0]}: exists ({came}); exporting {source} would replace it: "
            "choose another --out folder, or pass --overwrite"
        )


def record_export(folder: str | os.PathLike, names: list[str], source: str | os.PathLike) -> None:
    """Note in the folder's record that `names` now hold `source`'s export."""
    from .atomic import atomic_open

    folder = Path(folder)
    record = read_export_record(folder)
    record.update(dict.fromkeys(names, export_source(source)))
    with atomic_open(folder / EXPORT_RECORD, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write("\n")
