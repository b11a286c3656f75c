"""When a torch.compile'd fast path may fall back to eager code: on compilation failures only.

Reads nothing, writes nothing. torch.compile compiles lazily, on a function's first call (and
a backward graph on its first backward), so a fast path meets its compiler's failures where it
runs. Those (no C++ compiler, an unsupported device or operator, a dynamo bug) happen before the
compiled code runs, so nothing the call would change has changed and re-running eagerly is
safe. Anything raised while compiled code runs (out of memory, a CUDA error, a bug) is not a
compilation failure: it propagates, as it would in eager code.

`first_call` makes that lazy compilation visible: the first call of a compiled function in a
process says, on an open progress display, that it compiles (or loads the compiled code from
inductor's on-disk cache), then how long that took and which it was, and restarts the
display's rate so its time left is not the compile's.
"""

import contextlib
import platform
import sys
import time
import warnings

from . import threads
from .progress import duration, note, note_warmup

_CALLED: set[str] = set()  # compiled functions already called once in this process


@contextlib.contextmanager
def compile_settings(compiled: bool, ranking: bool = False):
    """Inductor's settings for a loop of compiled calls (`compiled`; otherwise nothing is set
    and no compiler imported), put back on leaving. Both are part of inductor's cache key, so
    every loop of a kind sets them the same way.

    The CPU's vector ISA from its flags (`cpp.vec_isa_ok`): inductor picks the ISA of its
    kernels (AVX2, AVX-512, ...) among those /proc/cpuinfo lists, and proves each by compiling
    and loading a test library in a child process: measured 5 s of the 10 s a first
    `evaluate --head` spent compiling, and 0.8 s of every later process that compiles. With the
    flags' word it picks the same ISA wherever the C++ compiler builds it; one that cannot fails
    to compile, and the fast paths fall back to eager code with a warning, as with no compiler.
    Only on x86-64 Linux where torch's own kernels run AVX2 or AVX-512, and never over the
    user's TORCHINDUCTOR_VEC_ISA_OK.

    Re-ranking (`ranking`): kernels for any thread count (`cpp.dynamic_threads`). The thread
    policy (threads.py) may give a core up between blocks; a kernel compiled for all cores
    already reads the count when it runs (the same code, measured), but its cache entry was
    keyed by the count it was compiled at, so the first block on one thread compiled the kernels
    again (~6 s) instead of loading them.
    """
    if not compiled:
        yield
        return
    from torch._inductor import config

    settings = {"cpp.dynamic_threads": True} if ranking else {}
    if config.cpp.vec_isa_ok is None and _trusts_cpu_flags():  # else the user's setting rules
        settings["cpp.vec_isa_ok"] = True
    with config.patch(settings):
        yield


def _trusts_cpu_flags() -> bool:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    import torch

    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def compile_failures() -> tuple[type[BaseException], ...]:
    """The exception types torch.compile raises when it cannot compile (empty before any compile:
    torch._dynamo is imported by the first compilation, so nothing raised earlier is one)."""
    exc = sys.modules.get("torch._dynamo.exc")
    if exc is None:
        return ()
    # BackendCompilerFailed includes inductor's InductorError (C++/Triton codegen and build)
    return (exc.BackendCompilerFailed, exc.Unsupported, exc.InternalTorchDynamoError)


def is_compile_failure(error: BaseException) -> bool:
    return isinstance(error, compile_failures())


def warn_fallback(error: BaseException, eager: str) -> None:
    """One warning naming the failure and the eager code used instead."""
    warnings.warn(f"torch.compile failed ({error!s:.200}); {eager}", stacklevel=3)


def cacheable_autograd():
    """Context in which AOTAutograd may cache graphs holding custom autograd.Functions (the
    training step's `_Linear`, `_PairLogits`, ...); torch bypasses its cache for them by
    default, so every process re-traced and re-partitioned the joint graph: measured 8-10 s
    before the first step of `train-head` with a warm cache, 5.4 s with this. The key still
    holds the traced forward and backward of each Function, so a changed backward is a miss.
    Set only around the compiled calls and put back after (a process-wide flag)."""
    import torch._functorch.config as functorch_config

    if not hasattr(functorch_config, "autograd_cache_allow_custom_autograd_functions"):
        return contextlib.nullcontext()  # an older torch: no such cache, nothing to allow
    return functorch_config.patch(autograd_cache_allow_custom_autograd_functions=True)


def first_call(key: str, what: str, fn, *args):
    """fn(*args); the first time `key` is called in this process, announced as above."""
    if key in _CALLED:
        return fn(*args)
    note(
        f"compiling {what} (on first use; tens of seconds on 2 cores, then loaded from the "
        "compile cache in seconds)"
    )
    before = _graph_counts()
    start = time.monotonic()
    out = fn(*args)
    threads.restart()  # the compiler's child processes are not other users of the machine
    _CALLED.add(key)  # after success: a compile failure's eager fallback is not announced
    misses, hits = (after - then for after, then in zip(_graph_counts(), before, strict=True))
    if misses:
        how = "compiled"
    elif hits:
        how = "loaded from the compile cache"
    else:  # fn fell back to eager code itself (its warning says why), or was compiled before
        how = "nothing compiled"
    note(f"{what}: {how} in {duration(time.monotonic() - start)}")
    note_warmup()
    return out


def _graph_counts() -> tuple[int, int]:
    """Graphs inductor compiled (not in its on-disk cache) and loaded from it so far."""
    utils = sys.modules.get("torch._dynamo.utils")
    if utils is None:
        return 0, 0
    counts = utils.counters["inductor"]
    return counts["fxgraph_cache_miss"], counts["fxgraph_cache_hit"]
