"""The work folder of a resumable extraction: `OUT.parts/` beside the output file.

Writes: `OUT.parts/manifest.json` (what the run is: settings, caption file checksum, chunk
count) and one complete small cache per finished chunk, `part-000000.h5`, ... Each part is
written under `.partial` and renamed when complete, then fsync'd, so a kill -9 or a power loss
leaves either a whole part or none. Reads: the same folder, on the next run.

A rerun with the same manifest skips the chunks whose part exists and opens; a rerun whose
settings or caption file differ is refused (the user removes the folder or passes --restart),
because mixing parts of two different runs would make a cache that no single run would make.
A folder without a finished part (a run that stopped at start-up: no checkpoint, a text model
not in the local cache) holds nothing to resume, so its manifest is simply replaced.
"""

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_open
from ..cache import Cache, CacheError
from ..errors import UserError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class WorkFolder:
    """The parts folder of one output file."""

    out: Path

    @property
    def path(self) -> Path:
        return self.out.with_name(self.out.name + ".parts")

    def part(self, chunk: int) -> Path:
        return self.path / f"part-{chunk:06d}.h5"

    def prepare(self, key: dict, n_chunks: int, restart: bool = False) -> list[int]:
        """Create or re-open the folder for the run described by `key`; return the chunks
        already done. Raises UserError when the folder belongs to a different run."""
        if restart and self.path.exists():
            shutil.rmtree(self.path)
        manifest = self.path / MANIFEST
        record = {"version": MANIFEST_VERSION, "n_chunks": n_chunks, **key}
        if manifest.exists() and any(self.path.glob("part-*.h5")):
            self._check(manifest, record)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            with atomic_open(manifest) as f:
                json.dump(record, f, indent=2, sort_keys=True, default=str)
            _fsync_dir(self.path)
        for leftover in self.path.glob("*.partial"):  # a part a killed run was writing
            leftover.unlink()
        return [chunk for chunk in range(n_chunks) if self._done(chunk)]

    def _check(self, manifest: Path, record: dict) -> None:
        try:
            old = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(
                f"{manifest}: unreadable ({e}); remove {self.path} or pass --restart"
            ) from None
        before, now = flatten(old), flatten(json.loads(json.dumps(record, default=str)))
        changed = [k for k in sorted(before.keys() | now.keys()) if before.get(k) != now.get(k)]
        if changed:
            names = [key.removeprefix("settings.") for key in changed]
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise UserError(
                f"{self.path}: holds an interrupted extraction made with different settings or "
                f"input ({shown} changed); run the same command as before to resume it, or "
                f"pass --restart (or remove the folder) to start over"
            )

    def _done(self, chunk: int) -> bool:
        """A part counts as done when it exists and opens as a cache; a damaged one (a power
        loss before the disk caught up) is deleted and redone."""
        part = self.part(chunk)
        if not part.exists():
            return False
        try:
            Cache(part).close()
        except CacheError:
            part.unlink()
            return False
        return True

    def check_provenance(self, chunk: int, provenance: dict[str, dict | None]) -> None:
        """Refuse to add parts made differently from the finished part `chunk` (another
        checkpoint file under the same name, another device type): the merge would refuse them
        at the very end."""
        with Cache(self.part(chunk)) as part:
            for side, wanted in provenance.items():
                if wanted is None or not part.has(side):
                    continue
                have = part.side_attrs(side)
                new = json.loads(json.dumps(wanted, sort_keys=True, default=str))
                changed = [k for k in sorted(new) if have.get(k) != new[k]]
                if isinstance(have.get("settings"), dict) and "settings" in changed:
                    old_settings = flatten(have["settings"])
                    new_settings = flatten(new["settings"])
                    changed.remove("settings")
                    changed += [
                        f"settings.{k}"
                        for k in sorted(old_settings.keys() | new_settings.keys())
                        if old_settings.get(k) != new_settings.get(k)
                    ]
                if changed:
                    raise UserError(
                        f"{self.path}: the finished parts' /{side} features were made "
                        f"differently ({', '.join(changed[:4])} changed: another checkpoint "
                        "file or device?); resume with the same encoder files and device, or "
                        "pass --restart"
                    )

    def finished(self, chunk: int) -> None:
        """Make a just-renamed part durable (file and folder entry on disk)."""
        with open(self.part(chunk), "rb") as f:
            os.fsync(f.fileno())
        _fsync_dir(self.path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def flatten(record: dict, prefix: str = "") -> dict:
    """{"audio": {"encoder": x}} -> {"audio.encoder": x}, for naming what changed."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some systems (Windows); nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def text_sha256(lines: list[str]) -> str:
    """A checksum of a list of strings (e.g. which clips have audio)."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()
