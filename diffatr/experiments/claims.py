"""Claims on runs through the file system: which process does a run, and when its claim is stale.

Reads and writes `OUT/runs/<run>/claim.<n>` (JSON: host, pid, rank, a heartbeat counter) beside
the store's `done.json`. Several processes (torchrun ranks, on one machine or several sharing
`OUT`) run the same table; a process does a run only while it holds the run's newest claim.
No server: the only atomic step is creating a file that must not exist (`O_CREAT | O_EXCL`),
which local file systems and NFS (v3 and later) both honour.

Generations, not one lock file: the claim on a run is its highest-numbered `claim.<n>`. To claim
a free run a process creates `claim.<n+1>`; of two processes that both saw `claim.<n>` free, one
creates the file and the other gets `FileExistsError`. A claim is free when it says "released",
or when its holder is dead: on the same host its pid no longer exists; on any host its
heartbeat (rewritten every `beat` seconds by a thread of the holder) has not changed for
`stale_after` seconds of the *observer's* clock, so clocks of different machines never compare.
Deleting the newest claim of an unfinished run could let two processes each believe they hold
it, so a claim is deleted only once the run is done (`done.json`), and a process that claims a
run re-reads `done.json` before any work: a run completed meanwhile is never redone.
"""

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .store import DONE

STALE_AFTER = 120.0  # seconds a claim's heartbeat may stand still before its run is taken over
_NAME = re.compile(r"claim\.(\d+)$")


class Claims:
    """This process's claims on run folders, with the heartbeat that keeps them alive."""

    def __init__(self, rank: int = 0, stale_after: float = STALE_AFTER, clock=time.monotonic):
        self.rank, self.stale_after, self.clock = rank, stale_after, clock
        self.every = max(0.05, stale_after / 8)  # several beats per stale period: a late one
        #   (a loaded machine, a slow NFS server) never makes a live claim look dead
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.held: dict[Path, Path] = {}  # run folder -> our claim file in it
        self.beats = 0
        self.seen: dict[Path, tuple[object, float]] = {}  # claim file -> (heartbeat, first seen)
        self.lock = threading.Lock()  # the heartbeat thread rewrites the files we hold
        self.takeovers = 0  # stale claims of dead processes this process took over

    # -- claiming ---------------------------------------------------------------------------
    def take(self, folder: Path) -> bool:
        """Claim the run in `folder`; False if a live process holds it (or won the race)."""
        if folder in self.held:
            if self.holds(folder):
                return True
            with self.lock:
                self.held.pop(folder, None)  # taken over while this process stood still
        folder.mkdir(parents=True, exist_ok=True)
        newest = _newest(folder)
        if newest is not None:
            n, path = newest
            info = _read(path)
            if not self._free(path, info):
                return False
            if info is not None and not info.get("released"):
                self.takeovers += 1
        else:
            n = 0
        path = folder / f"claim.{n + 1}"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False  # another process took it first
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._info(), f)
        with self.lock:
            self.held[folder] = path
        for old in folder.glob("claim.*"):  # superseded generations: only the newest counts
            m = _NAME.match(old.name)
            if m and int(m.group(1)) <= n:
                old.unlink(missing_ok=True)
        return True

    def holds(self, folder: Path) -> bool:
        """Whether this process still holds the run: its claim is the newest (a process that
        stood still for `stale_after` seconds, hung or cut off, may have lost it)."""
        newest = _newest(folder)
        return newest is not None and newest[1] == self.held.get(folder)

    def release(self, folder: Path) -> None:
        """Give the run back: its claim is deleted when it is done, else marked released."""
        with self.lock:
            path = self.held.pop(folder, None)
            if path is None or _newest(folder) != (int(path.suffix[1:]), path):
                return  # not ours (any more): the newest claim belongs to another process
            if (folder / DONE).exists():
                path.unlink(missing_ok=True)
            else:
                _write(path, {**self._info(), "released": True})

    def release_all(self) -> None:
        for folder in list(self.held):
            self.release(folder)

    def state(self, folder: Path) -> str:
        """ "done", "claimed" (by a live process, as far as this process can tell) or "free"."""
        if (folder / DONE).exists():
            return "done"
        newest = _newest(folder)
        if newest is None:
            return "free"
        path = newest[1]
        if folder in self.held:
            return "claimed"
        return "free" if self._free(path, _read(path)) else "claimed"

    # -- liveness ---------------------------------------------------------------------------
    def _info(self) -> dict:
        return {"host": self.host, "pid": self.pid, "rank": self.rank, "beat": self.beats}

    def _free(self, path: Path, info: dict | None) -> bool:
        """Released, or its holder dead (see the module docstring)."""
        if info is not None and info.get("released"):
            return True
        pid = None if info is None or info.get("host") != self.host else info.get("pid")
        if pid is not None and (pid == self.pid or not _alive(pid)):
            return True  # dead, or an earlier process whose pid this one got (not held)
        # a claim being written (empty) or one of another host: alive while its beat moves
        beat = None if info is None else info.get("beat")
        now = self.clock()
        last, since = self.seen.get(path, (object(), now))
        if beat != last:
            self.seen[path] = (beat, now)
            return False
        return now - since >= self.stale_after

    def beat(self) -> None:
        """One heartbeat: every held claim's counter moves on."""
        with self.lock:
            self.beats += 1
            for folder, path in list(self.held.items()):
                if _newest(folder) == (int(path.suffix[1:]), path):
                    _write(path, self._info())  # never re-create a superseded claim

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Keep the held claims alive for the duration of the block (a thread, joined on exit);
        the claims still held on exit are released."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.every):
                self.beat()

        thread = threading.Thread(target=beat, name="diffatr-claims", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.release_all()


def _newest(folder: Path) -> tuple[int, Path] | None:
    found = [(int(m.group(1)), p) for p in folder.glob("claim.*") if (m := _NAME.match(p.name))]
    return max(found) if found else None


def _read(path: Path) -> dict | None:
    """A claim's content; None while its creator is still writing it (or it just vanished)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write(path: Path, info: dict) -> None:
    """Replace a claim's content whole (a reader never sees half of it); the name stays taken."""
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}-{os.getpid()}.partial")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    os.replace(tmp, path)


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # cannot tell: leave it to the heartbeat
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
