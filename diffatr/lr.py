"""The learning-rate schedule both heads train with (DiffusionRet's): linear warm-up, then cosine
decay to 0. Reads and writes nothing."""

import math
from collections.abc import Callable


def warmup_cosine(total: int, warmup: float) -> Callable[[int], float]:
    """LR factor of step i (0-based): linear warm-up over warmup * total steps, cosine decay."""
    n_warm = max(1, round(warmup * total))

    def f(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        progress = (step - n_warm) / max(1, total - n_warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f
