"""Print metrics as a paper-style table and write them as JSON (atomically)."""

import json
import math
import os

from ..atomic import atomic_open
from .dcase2025 import format_dcase2025
from .metrics import METRICS


def format_table(rows: dict[str, dict[str, float]], protocol: str) -> str:
    """One line per (system, direction); R@k and mAP@10 in percent, 1 decimal.

    rows maps a system name (e.g. "cosine") to its metrics dict (keys like "t2a_R@1").
    """
    if protocol == "dcase2025":
        return format_dcase2025(rows)
    directions = [d for d in ("t2a", "a2t") if any(f"{d}_R@1" in m for m in rows.values())]
    has_ci = any("t2a_mAP@10_ci_low" in m for m in rows.values())
    name_w = max(len("system"), *(len(n) for n in rows))
    header = f"{'system':<{name_w}}  dir " + "".join(f"{m:>8}" for m in METRICS)
    if has_ci:
        header += f"  {'mAP@10 95% CI':>15}"
    title = {"paper": "paper protocol (Mei et al.)", "dcase": "DCASE Task 6b protocol"}
    lines = [title.get(protocol, protocol), header, "-" * len(header)]
    for name, metrics in rows.items():
        for d in directions:
            if f"{d}_R@1" not in metrics:
                continue
            line = f"{name:<{name_w}}  {d} " + "".join(
                f"{metrics[f'{d}_{m}']:>8.1f}" for m in METRICS
            )
            if has_ci and d == "t2a":
                low, high = metrics["t2a_mAP@10_ci_low"], metrics["t2a_mAP@10_ci_high"]
                line += f"  {f'[{low:.1f}, {high:.1f}]':>15}"
            lines.append(line)
    return "\n".join(lines)


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write `payload` as indented JSON; NaN is refused rather than written as invalid JSON."""
    for key, value in payload.get("metrics", {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"metric {key} is {value}")
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=False)
        f.write("\n")
