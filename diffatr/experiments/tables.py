"""Per-seed ablation results -> a paper-style table (mean +- std over seeds), JSON and CSV.

Reads nothing. Writes, into one folder per table: `results.json` (the settings, every per-seed
record and the summary), `results.csv` (one line per record and seed: the paper's numbers can be
regenerated from it) and `table.txt` (what is printed). All atomically.
"""

import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..atomic import atomic_open
from ..evaluate.metrics import METRICS
from .grids import TABLES

PROTOCOL_NAMES = {
    "paper": "paper protocol (Mei et al.)",
    "dcase": "DCASE Task 6b protocol",
    "dcase2025": "DCASE 2025 Task 6 protocol (mAP@16)",
}
SHOWN = ("R@1", "R@5", "R@10")  # the paper's columns; results.json/csv hold every metric


def summarise(records: list[dict]) -> list[dict]:
    """Group records by (train, test, row, system) in first-seen order; mean and sample std
    (ddof 1; 0 for a single seed) of every metric over the seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["train"], r["test"], r["row"], r["system"]), []).append(r)
    out = []
    for (train, test, row, system), rs in groups.items():
        keys = list(rs[0]["metrics"])
        values = {k: np.array([r["metrics"][k] for r in rs], dtype=np.float64) for k in keys}
        out.append(
            {
                "train": train,
                "test": test,
                "row": row,
                "system": system,
                "seeds": [r["seed"] for r in rs],
                "mean": {k: float(v.mean()) for k, v in values.items()},
                "std": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()},
            }
        )
    return out


def format_ablation(name: str, summary: list[dict], protocol: str) -> str:
    """The table as text: one block per (train, test) pair, one line per row."""
    table = TABLES[name]
    directions = [d for d in ("t2a", "a2t") if summary and f"{d}_R@1" in summary[0]["mean"]]
    columns = [f"{d}_{m}" for d in directions for m in SHOWN]
    n_seeds = max((len(s["seeds"]) for s in summary), default=0)
    paper = f" (the paper's {table.paper})" if table.paper else ""
    lines = [
        f"{table.title}{paper}",
        f"{PROTOCOL_NAMES.get(protocol, protocol)}; %, "
        + (f"mean +- std over {n_seeds} seeds" if n_seeds > 1 else "one seed (no spread)"),
    ]
    row_w = max([len("row"), *(len(s["row"]) for s in summary)])
    sys_w = max([len("system"), *(len(s["system"]) for s in summary)])
    header = f"{'row':<{row_w}}  {'system':<{sys_w}}" + "".join(
        f"{c.replace('_', ' '):>13}" for c in columns
    )
    pair = None
    for s in summary:
        if (s["train"], s["test"]) != pair:
            pair = (s["train"], s["test"])
            where = pair[0] if pair[0] == pair[1] else f"{pair[0]} -> {pair[1]}"
            lines += ["", f"{where} (test split of {pair[1]})", header, "-" * len(header)]
        cells = "".join(_cell(s, c) for c in columns)
        lines.append(f"{s['row']:<{row_w}}  {s['system']:<{sys_w}}{cells}")
    return "\n".join(lines)


def _cell(s: dict, column: str) -> str:
    """ "27.7+-1.4" over several seeds; "27.7" alone for one (a spread of 0.0 would claim one)."""
    if len(s["seeds"]) > 1:
        return f"{s['mean'][column]:>8.1f}+-{s['std'][column]:<3.1f}"
    return f"{s['mean'][column]:>8.1f}     "


def write_table(folder: Path, name: str, records: list[dict], cfg) -> str:
    """Write results.json, results.csv and table.txt for one table; return the text."""
    summary = summarise(records)
    text = format_ablation(name, summary, cfg.protocol)
    payload = {
        "table": name,
        "title": TABLES[name].title,
        "paper": TABLES[name].paper,
        "protocol": cfg.protocol,
        "config": asdict(cfg),
        "summary": summary,
        "records": records,
    }
    with atomic_open(folder / "results.json", "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, default=str)
    metric_keys = _metric_keys(records)
    with atomic_open(folder / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["table", "train", "test", "row", "system", "seed", "protocol", *metric_keys]
        )
        for r in records:
            m = r["metrics"]
            writer.writerow(
                [name, r["train"], r["test"], r["row"], r["system"], r["seed"], cfg.protocol]
                + [m.get(k, "") for k in metric_keys]
            )
    with atomic_open(folder / "table.txt", "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return text


def _metric_keys(records: list[dict]) -> list[str]:
    """Every metric key seen, in the protocols' order (direction, then METRICS), then the rest."""
    seen = {k for r in records for k in r["metrics"]}
    order = [f"{d}_{m}" for d in ("t2a", "a2t") for m in METRICS]
    return [k for k in order if k in seen] + sorted(seen - set(order))
