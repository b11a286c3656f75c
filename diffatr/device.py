"""Pick the torch device from a user's choice ("auto" means CUDA when present, else CPU), and
the CPU's denormal handling for the head's numerics."""

import contextlib
from collections.abc import Iterator

import torch

from .errors import UserError


def resolve_device(choice: str = "auto") -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {choice}: no CUDA device is visible here; use cpu or auto")
    try:
        return torch.device(choice)
    except RuntimeError as e:
        raise UserError(f"--device {choice}: not a torch device ({e})") from None


_flush_depth = 0  # nesting depth of flush_denormal blocks (validation runs inside training)


@contextlib.contextmanager
def flush_denormal() -> Iterator[None]:
    """Treat float32 denormals as zero inside the block; nested blocks keep it on.

    The head's softmaxes and Adam's second moments produce values below 1e-38, and x86 CPUs
    handle those ~100x slower; measured: one training batch 0.24 s -> 0.05 s on 2 cores.
    Torch's default (off) is restored when the outermost block ends.
    """
    global _flush_depth
    if _flush_depth == 0:
        torch.set_flush_denormal(True)
    _flush_depth += 1
    try:
        yield
    finally:
        _flush_depth -= 1
        if _flush_depth == 0:
            torch.set_flush_denormal(False)
