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


def _first_non_finite(value, where: str = "") -> tuple[str, float] | None:
    """(key path, value) of the first NaN/Inf float anywhere in a JSON-like value, else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, value)
    if not isinstance(value, (dict, list, tuple)):
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        found = _first_non_finite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write `payload` as indented JSON; NaN/Inf anywhere (one system's result or a dict of
    them) is refused rather than written as invalid JSON."""
    found = _first_non_finite(payload)
    if found:
        raise ValueError(f"{found[0]} is {found[1]}")
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=False)
        f.write("\n")
