"""The results folder of an ablation: one folder per run, named by what the run depends on.

Reads and writes `OUT/runs/<kind>-<name>-<digest>/`: `settings.json` (everything the digest
covers: input files, upstream runs, settings, seed), the run's artefacts, and `done.json`, written
last and atomically. A run whose `done.json` exists is complete and is never redone, so an
interrupted ablation resumes where it stopped, and a run shared by several tables (the default
head, say) is done once. An input cache is identified by its path, size and modification time:
edit or replace it and the runs that read it are redone.
"""

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_open

DONE = "done.json"


@dataclass(frozen=True)
class Splits:
    """Joint-space caches: a head trains on train/val and is tested on test."""

    train: Path
    val: Path
    test: Path
    key: dict  # what they depend on (inputs, phase-1 run), for the runs downstream


def digest(obj) -> str:
    """A short stable hash of a JSON-able description."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def file_identity(path: str | os.PathLike) -> dict:
    """What a run remembers of an input file: where it is and which version it read."""
    path = Path(path).resolve()
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class Store:
    """Run folders under `root / "runs"`; `key` is a JSON-able dict of everything a run reads."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def run_dir(self, kind: str, name: str, key: dict) -> Path:
        folder = self.root / "runs" / f"{kind}-{_safe(name)}-{digest(key)}"
        path = folder / "settings.json"
        if not path.exists():
            # several processes (`schedule.py`) may write it at once: each through its own
            # temporary name (atomic_open's is shared), all with the same content
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"settings.json.{socket.gethostname()}-{os.getpid()}.partial"
            tmp.write_text(json.dumps(key, indent=2, sort_keys=True, default=str), "utf-8")
            os.replace(tmp, path)
        return folder

    @staticmethod
    def done(folder: Path) -> dict | None:
        """The run's record if it completed, else None."""
        marker = folder / DONE
        if not marker.exists():
            return None
        return json.loads(marker.read_text(encoding="utf-8"))

    @staticmethod
    def finish(folder: Path, record: dict) -> dict:
        with atomic_open(folder / DONE, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, default=str)
        return record


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)[:60]
