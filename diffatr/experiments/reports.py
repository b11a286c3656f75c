"""Per-query HTML pages of one ablation table (`ablate --report`): each re-ranked row against
the cosine row of the same seed and datasets.

Reads: the table's records, each holding the .npz of per-query outcomes its evaluation recorded
(`measure(..., record=)`) and the test cache it ranked. Writes: FOLDER/NAME/index.html per
(row, seed, train -> test) that is not cosine (evaluate/html_report.py), and FOLDER/index.html,
a list of them with each one's summary line.
"""

import html
import re
from pathlib import Path

from ..atomic import atomic_open
from ..evaluate.html_report import write_report_page
from ..evaluate.per_query import load_outcomes


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_")


def write_reports(folder: Path, records: list[dict], protocol: str) -> list[Path]:
    """One page per re-ranked record that has a cosine partner; returns the pages' paths."""
    cosine = {
        (r["train"], r["test"], r["seed"]): r
        for r in records
        if r["system"] == "cosine" and "queries" in r
    }
    pages, lines = [], []
    for r in records:
        base = cosine.get((r["train"], r["test"], r["seed"]))
        if r["system"] == "cosine" or "queries" not in r or base is None:
            continue
        data = r["test"] if r["train"] == r["test"] else f"{r['train']}-to-{r['test']}"
        name = _slug(f"{data}-{r['row']}-{r['system']}-seed{r['seed']}")
        systems = {
            "cosine": (base["metrics"], load_outcomes(base["queries"])),
            r["system"]: (r["metrics"], load_outcomes(r["queries"])),
        }
        settings = f"row {r['row']}, train {r['train']}, seed {r['seed']}"
        page, summary = write_report_page(
            folder / name, r["test_cache"], systems, protocol, settings=settings
        )
        pages.append(page)
        lines.append(f'<li><a href="{name}/index.html">{html.escape(name)}</a>: '
                     f"{html.escape(summary)}</li>")  # fmt: skip
    if pages:
        with atomic_open(folder / "index.html", "w", encoding="utf-8") as f:
            f.write(
                '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
                '<title>per-query reports</title></head><body style="font: 14px system-ui">'
                f"<h1>Per-query reports ({len(pages)})</h1><ul>{''.join(lines)}</ul>"
                "</body></html>\n"
            )
    return pages
