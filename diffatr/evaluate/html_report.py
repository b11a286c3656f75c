"""The per-query report: one static, self-contained HTML page of what a re-ranker changed.

Reads: two `EvalResult`s that recorded per-query outcomes (`EvalConfig(per_query_top=5)`): the
base ranking (cosine) and a re-ranker's; the cache's captions, clip ids and caption -> clip
rows; optionally an audio folder. Writes: DIR/index.html (atomically), which opens from disk
with no server and no network: the metrics table, the recall curves (inline SVG), a one-line
summary of how many queries improved and worsened, and the table of queries (ground truth, rank
under each system, the top few under each with scores), sorted, filtered and rendered by the
inline script of report_assets.py from one JSON blob. Audio is linked relative to DIR, never
copied.
"""

import html
import json
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..atomic import atomic_open
from ..cache import Cache
from ..errors import UserError
from .cached import EvalResult
from .metrics import METRICS
from .per_query import QueryOutcomes, rank_changes
from .report_assets import CSS, JS

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
CURVE_K = 100
DIRECTION_NAMES = {"t2a": "text-to-audio", "a2t": "audio-to-text"}


def audio_links(audio_dir: str | os.PathLike, clip_ids: list[str], out_dir: Path) -> list:
    """Each clip's file in audio_dir as a URL relative to out_dir (None where there is none):
    the id itself, or the id with a common audio suffix (AudioCaps ids often lack one)."""
    folder = Path(audio_dir)
    if not folder.is_dir():
        raise UserError(f"{folder}: --audio-dir is not a folder")
    names = {p.name for p in folder.iterdir()}
    by_stem = {}
    for name in sorted(names):
        by_stem.setdefault(Path(name).stem, name)
    base = Path(os.path.relpath(folder.resolve(), out_dir.resolve()))
    links = []
    for clip in clip_ids:
        name = clip if clip in names else by_stem.get(clip)
        if name is None and (folder / clip).is_file():
            name = clip  # an id with sub-folders
        if name is None:
            name = next((clip + s for s in AUDIO_SUFFIXES if clip + s in names), None)
        links.append(None if name is None else quote((base / name).as_posix()))
    return links


def summary_line(names: list[str], base: QueryOutcomes, other: QueryOutcomes) -> str:
    """`diffatr vs cosine: text-to-audio 412 of 4785 queries improved, 380 worsened; ...`."""
    parts = []
    for d in other.directions:
        c = rank_changes(base, other, d)
        parts.append(
            f"{DIRECTION_NAMES[d]} {c.improved:,} of {c.queries:,} queries improved, "
            f"{c.worsened:,} worsened, {c.unchanged:,} unchanged"
        )
    return f"{names[1]} vs {names[0]}: " + "; ".join(parts)


def _direction_payload(d: str, base: QueryOutcomes, other: QueryOutcomes, index: np.ndarray):
    r0, r1 = getattr(base, f"{d}_rank"), getattr(other, f"{d}_rank")
    q = np.flatnonzero(r0 > 0)
    if d == "t2a":
        gt = index[q].tolist()
    else:
        order = np.argsort(index, kind="stable")
        starts = np.searchsorted(index[order], q)
        ends = np.searchsorted(index[order], q, side="right")
        gt = [order[s:e].tolist() for s, e in zip(starts, ends, strict=True)]
    out = {"q": q.tolist(), "gt": gt, "r0": r0[q].tolist(), "r1": r1[q].tolist()}
    for i, o in enumerate((base, other)):
        out[f"top{i}"] = getattr(o, f"{d}_top")[q].tolist()
        out[f"s{i}"] = np.round(getattr(o, f"{d}_score")[q].astype(np.float64), 4).tolist()
    return out


def _recall(ranks: np.ndarray) -> list[float]:
    r = np.sort(ranks[ranks > 0])
    return (100.0 * np.searchsorted(r, np.arange(1, CURVE_K + 1), side="right") / len(r)).tolist()


def _curves_svg(title: str, curves: dict[str, list[float]]) -> str:
    """R@k for k = 1..CURVE_K, one polyline per system, as an inline SVG."""
    w, h, left, right, top, bottom = 440, 280, 44, 12, 28, 36
    pw, ph = w - left - right, h - top - bottom

    def xy(k: int, r: float) -> str:
        return f"{left + pw * (k - 1) / (CURVE_K - 1):.1f},{top + ph * (1 - r / 100):.1f}"

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
    ]
    for r in range(0, 101, 20):
        y = top + ph * (1 - r / 100)
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y}" y2="{y}" stroke="#e6e6e6"/>')
        out.append(_text(left - 6, y + 4, str(r), 'text-anchor="end"'))
    for k in (1, 20, 40, 60, 80, 100):
        out.append(_text(left + pw * (k - 1) / (CURVE_K - 1), h - bottom + 16, str(k)))
    out.append(_text(left + pw / 2, h - 4, "k"))
    mid = top + ph / 2
    out.append(_text(12, mid, "R@k (%)", f'text-anchor="middle" transform="rotate(-90 12 {mid})"'))
    styles = ('stroke="#888" stroke-dasharray="5 3"', 'stroke="#1f77b4"')
    for i, (name, values) in enumerate(curves.items()):
        style = f'stroke-width="2" {styles[i % 2]}'
        points = " ".join(xy(k, v) for k, v in enumerate(values, start=1))
        out.append(f'<polyline fill="none" {style} points="{points}"/>')
        y = top + ph - 14 - 16 * (len(curves) - 1 - i)
        out.append(f'<line x1="{w - 150}" x2="{w - 126}" y1="{y}" y2="{y}" {style}/>')
        out.append(f'<text x="{w - 120}" y="{y + 4}" font-size="12">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _text(x: float, y: float, text: str, attrs: str = 'text-anchor="middle"') -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" {attrs}>{html.escape(text)}</text>'


def _metrics_table(metrics: dict[str, dict]) -> str:
    head = "".join(f"<th>{m}</th>" for m in METRICS)
    rows = []
    for name, values in metrics.items():
        for d in ("t2a", "a2t"):
            if f"{d}_R@1" in values:
                cells = "".join(f"<td>{values[f'{d}_{m}']:.1f}</td>" for m in METRICS)
                rows.append(f"<tr><td>{html.escape(name)}</td><td>{d}</td>{cells}</tr>")
    return (
        f'<table class="metrics"><thead><tr><th>system</th><th>dir</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _json_for_script(payload: dict) -> str:
    """JSON that cannot close its <script> element early."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_query_report(
    out_dir: str | os.PathLike,
    cache_path: str | os.PathLike,
    results: dict[str, EvalResult],
    audio_dir: str | os.PathLike | None = None,
    settings: str = "",
) -> tuple[Path, str]:
    """Write out_dir/index.html comparing results' second system with its first (the base).

    Returns the page's path and the one-line summary."""
    if len(results) != 2 or any(r.queries is None for r in results.values()):
        raise ValueError("a report compares two rankings that recorded per-query outcomes")
    systems = {name: (r.metrics, r.queries) for name, r in results.items()}
    protocol = next(iter(results.values())).config.protocol
    return write_report_page(out_dir, cache_path, systems, protocol, audio_dir, settings)


def write_report_page(
    out_dir: str | os.PathLike,
    cache_path: str | os.PathLike,
    systems: dict[str, tuple[dict, QueryOutcomes]],
    protocol: str,
    audio_dir: str | os.PathLike | None = None,
    settings: str = "",
) -> tuple[Path, str]:
    """`write_query_report` from {name: (metrics, outcomes)}, base first (what ablate has)."""
    names = list(systems)
    base, other = systems[names[0]][1], systems[names[1]][1]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --report names a folder, and this is a file")
    out.mkdir(parents=True, exist_ok=True)
    with Cache(cache_path) as cache:
        captions, clips, index = cache.captions(), cache.audio_ids(), cache.audio_index()
    summary = summary_line(names, base, other)
    directions = list(other.directions)
    payload = {
        "systems": names,
        "directions": directions,
        "captions": captions,
        "clips": clips,
        "audio": None if audio_dir is None else audio_links(audio_dir, clips, out),
        **{d: _direction_payload(d, base, other, np.asarray(index)) for d in directions},
    }
    curves = "".join(
        _curves_svg(
            f"{DIRECTION_NAMES[d]} R@k",
            {n: _recall(getattr(systems[n][1], f"{d}_rank")) for n in names},
        )
        for d in directions
    )
    e = html.escape
    n0, n1, k = e(names[0]), e(names[1]), base.t2a_top.shape[1]
    extra = " &middot; " + e(settings) if settings else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{n1} vs {n0}: {e(Path(cache_path).name)}</title>
<style>{CSS}</style></head>
<body>
<h1>What {n1} changed, query by query</h1>
<p class="meta">cache {e(str(cache_path))} &middot; {e(protocol)} protocol
&middot; {len(captions):,} captions, {len(clips):,} clips{extra}</p>
<p class="summary" id="summary">{e(summary)}</p>
<h2>Metrics</h2>
{_metrics_table({n: m for n, (m, _) in systems.items()})}
<h2>Recall curves</h2>
<div class="curves">{curves}</div>
<h2>Queries</h2>
<div class="controls">
<label>direction <select id="direction"></select></label>
<label>show <select id="show">
<option value="changed">changed rank</option><option value="improved">improved</option>
<option value="worsened">worsened</option><option value="unchanged">unchanged</option>
<option value="all">all queries</option></select></label>
<label>rank change at least <input id="min-delta" type="number" min="0" value="0"></label>
<label>sort <select id="sort">
<option value="absdelta:desc">largest change first</option>
<option value="delta:desc">most improved first</option>
<option value="delta:asc">most worsened first</option>
<option value="q:asc">query order</option>
<option value="r0:asc">best under {n0} first</option>
<option value="r1:asc">best under {n1} first</option></select></label>
<label>search <input id="search" type="search" placeholder="caption or clip"></label>
<span id="count"></span>
</div>
<table class="queries"><colgroup><col style="width:4em"><col style="width:18%">
<col style="width:15%"><col style="width:5.5em"><col style="width:5.5em"><col style="width:4.5em">
<col><col></colgroup>
<thead><tr><th class="sortable" data-sort="q">#</th><th id="query-head">query</th>
<th id="gt-head">ground truth</th><th class="sortable" data-sort="r0">rank {n0}</th>
<th class="sortable" data-sort="r1">rank {n1}</th>
<th class="sortable" data-sort="delta">&Delta;</th>
<th>top {k} under {n0} (score)</th><th>top {k} under {n1} (score)</th></tr></thead>
<tbody id="rows"></tbody></table>
<button id="more" type="button">show more</button>
<div id="playerbar" hidden><span id="now">click &#9654; beside a clip to play it</span>
<audio id="player" controls preload="none"></audio></div>
<noscript><p>The query table needs JavaScript; the metrics above do not.</p></noscript>
<script type="application/json" id="report-data">{_json_for_script(payload)}</script>
<script>{JS}</script>
</body></html>
"""
    path = out / "index.html"
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path, summary
