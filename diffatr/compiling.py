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
import sys
import time
import warnings

from .progress import duration, note, note_warmup

_CALLED: set[str] = set()  # compiled functions already called once in this process


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
        f"compiling {what} (on first use; ~1 min on 2 cores, then loaded from the compile "
        "cache in seconds)"
    )
    before = _graph_counts()
    start = time.monotonic()
    out = fn(*args)
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
