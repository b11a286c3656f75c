"""Build a C kernel once per machine and load it: the compiled fast paths that need no dynamo.

Reads a C source shipped in the package; writes one shared library per (source, compiler,
flags, CPU) into the compile cache, `TORCHINDUCTOR_CACHE_DIR` (inductor's default, the temp
dir's `torchinductor_USER`, when unset) under `diffatr-native/`: the same folder as
torch.compile's code, so emptying it empties both. The build is `cc -O3 -march=native` of one
file (~0.3 s); a later process loads the library in milliseconds, with no import beyond
`ctypes`. torch.compile'd code costs every process ~4-5 s before its first call (importing
dynamo and inductor, tracing the function again to find its cache entry; docs/speed.md), which
is why the loops that run thousands of small steps have a C kernel instead.

The library's name holds a hash of everything it was built from (the source and the headers it
includes from its own folder, the compiler's path and `--version`, the flags, the CPU's model
and flags), so a cache shared by machines of different CPUs or compilers keeps one library
each, and a changed source or header is built again; it is
written to a temporary name and renamed (two processes building at once both succeed). It is
loaded only from that folder, and only when the folder and the library are the user's own and
not writable by every user (else a warning, and the fallback).

No C compiler (or `CC` naming none), or a build that fails: `load` returns None and the caller
uses its torch code; a failed build says why once, in a warning.
"""

import contextlib
import ctypes
import getpass
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

from .progress import duration, note

FLAGS = ("-O3", "-std=c11", "-shared", "-fPIC", "-fno-math-errno")
NATIVE_ISA = ("-march=native",)  # tried first; a compiler or CPU without it builds generic code
OPENMP = "-fopenmp"

_LOADED: dict[str, ctypes.CDLL | None] = {}


def cache_dir() -> Path:
    """The compile cache's folder for native kernels (inductor's cache folder, as inductor
    chooses it)."""
    root = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not root:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            user = str(os.getuid()) if hasattr(os, "getuid") else "user"
        root = os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")
    return Path(root) / "diffatr-native"


def compiler() -> str | None:
    """The C compiler: `CC` when set (a path or a name on PATH), else cc, gcc or clang."""
    names = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def load(source: Path, what: str, openmp: bool = False) -> ctypes.CDLL | None:
    """The library built from `source` (a C file), built first if the cache lacks it; None when
    no C compiler builds it. Once per process per source.

    openmp: build with `-fopenmp` first (else without: the source must compile both ways). The
    library then needs `libgomp.so.1`, which the dynamic linker finds already loaded: the copy
    torch ships and runs its own threads on, so the kernel's parallel loops use torch's thread
    team (no second pool spinning against it)."""
    key = str(source)
    if key not in _LOADED:
        _LOADED[key] = _load(source, what, openmp)
    return _LOADED[key]


def _load(source: Path, what: str, openmp: bool) -> ctypes.CDLL | None:
    cc = compiler()
    if cc is None:
        if os.environ.get("CC"):  # the user named a compiler: say that it was not found
            warnings.warn(
                f"CC={os.environ['CC']} names no program on PATH: {what} not built; "
                "using its slower fallback instead",
                stacklevel=3,
            )
        return None
    text = _source_text(source)
    errors = []
    tries = [NATIVE_ISA, ()]
    if openmp:
        tries = [(OPENMP, *isa) for isa in tries] + tries
    builds = [(*FLAGS, *isa) for isa in tries]
    builds = [(f, cache_dir() / f"{source.stem}-{_key(text, cc, f)}.so") for f in builds]
    # start from the first library already built: a build that failed once (no OpenMP, no
    # -march=native) is not tried again, with its note, in every process
    start = next((i for i, (_, path) in enumerate(builds) if path.exists()), 0)
    for flags, path in builds[start:]:
        unsafe = _unsafe(path)
        if unsafe:
            errors.append(unsafe)
            break
        if not path.exists():
            error = _build(cc, flags, source, path, what)
            if error:
                errors.append(error)
                continue
        try:
            return ctypes.CDLL(str(path))
        except OSError as exc:  # e.g. a library the CPU cannot run: try generic code
            errors.append(f"{path}: {exc}")
    warnings.warn(
        f"could not build {what} from {source.name} with {cc} ({errors[-1][-300:]}); "
        "using its slower fallback instead",
        stacklevel=3,
    )
    return None


def _unsafe(path: Path) -> str | None:
    """Why a library at `path` (or its folders) could be someone else's code, or None: on POSIX
    the cache folders and an existing library must be this user's and not writable by every
    user (a shared temp dir lets anyone create `torchinductor_USER` first)."""
    if not hasattr(os, "getuid"):
        return None
    for p in (path.parent.parent, path.parent, path):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue  # created by this process, as its own
        except OSError as exc:
            return f"cannot check {p}: {exc}"
        if st.st_uid != os.getuid() or st.st_mode & 0o002:
            return f"{p} is not yours alone (owner uid {st.st_uid}, mode {oct(st.st_mode & 0o777)})"
    return None


def _build(cc: str, flags: tuple[str, ...], source: Path, path: Path, what: str) -> str | None:
    """Compile `source` into `path` (atomically); the compiler's error, or None."""
    note(f"compiling {what} (C, once per machine)")
    start = time.monotonic()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".so")
        os.close(fd)
    except OSError as exc:
        return f"cannot write {path.parent}: {exc}"
    try:
        out = subprocess.run(
            [cc, *flags, "-o", tmp, str(source), "-lm"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            return (out.stderr or out.stdout).strip() or f"exit status {out.returncode}"
        os.replace(tmp, path)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    took = time.monotonic() - start
    note(f"{what}: compiled in {f'{took:.1f}s' if took < 10 else duration(took)}")
    return None


def _source_text(source: Path) -> bytes:
    """The source and each header it includes from its own folder (`#include "name.h"`), so
    that a changed header builds the library again. A missing header is left out: the build
    then fails with the compiler's message and the fallback runs, as for any failed build."""
    text = source.read_bytes()
    for name in re.findall(rb'^#include "([^"]+)"', text, flags=re.MULTILINE):
        with contextlib.suppress(OSError):
            text += b"\0" + (source.parent / name.decode()).read_bytes()
    return text


def _key(text: bytes, cc: str, flags: tuple[str, ...]) -> str:
    h = hashlib.sha256(text)
    for part in (cc, _version(cc), " ".join(flags), platform.machine(), _cpu()):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:24]


def _version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu() -> str:
    """The CPU's model and flags (Linux), what -march=native compiles for; else the platform's
    processor name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features"))]
        return "".join(dict.fromkeys(lines))  # the first CPU's lines (all CPUs repeat them)
    except OSError:
        return platform.processor()
