"""When a torch.compile'd fast path may fall back to eager code: on compilation failures only.

Reads nothing, writes nothing. torch.compile compiles lazily, on a function's first call (and
a backward graph on its first backward), so a fast path meets its compiler's failures where it
runs. Those (no C++ compiler, an unsupported device or operator, a dynamo bug) happen before the
compiled code runs, so nothing the call would change has changed and re-running eagerly is
safe. Anything raised while compiled code runs (out of memory, a CUDA error, a bug) is not a
compilation failure: it propagates, as it would in eager code.
"""

import sys
import warnings


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
