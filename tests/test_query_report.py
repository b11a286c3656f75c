"""The per-query HTML report (`diffatr evaluate ... --report DIR`): its data against the
recorded outcomes, the CLI's refusals, and the page itself in a real headless Chromium (loads
from disk with no console errors and no network, filters, sorts, pages, audio links, a
screenshot)."""

import json
import re

import numpy as np
import pytest
from browser import open_page
from click.testing import CliRunner

from diffatr.cache import Cache, SyntheticConfig, make_synthetic
from diffatr.cli import main
from diffatr.evaluate import EvalConfig
from diffatr.evaluate.baselines import BaselineConfig, evaluate_baseline
from diffatr.evaluate.html_report import write_query_report

pytestmark = pytest.mark.usefixtures("one_thread")

AUDIO_CLIPS = 10  # clips that get a (fake) audio file


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    cache = root / "test.h5"
    make_synthetic(cache, SyntheticConfig(n_clips=120, captions_per_clip=(2, 5), dim=16, seed=4))
    audio = root / "audio"
    audio.mkdir()
    with Cache(cache) as c:
        ids = c.audio_ids()
    for clip in ids[:AUDIO_CLIPS]:
        (audio / clip).write_bytes(b"RIFF")
    out = root / "pages" / "rep"
    args = ["evaluate", cache, "--baseline", "inverted-softmax", "--topk", "16"]
    result = CliRunner().invoke(
        main, [str(a) for a in [*args, "--report", out, "--audio-dir", audio]]
    )
    assert result.exit_code == 0, result.output
    cfg = EvalConfig(device="cpu", per_query_top=5)
    results = evaluate_baseline(cache, BaselineConfig(name="inverted-softmax", topk=16), cfg)
    return {"root": root, "cache": cache, "page": out / "index.html", "output": result.output,
            "results": results, "ids": ids, "audio": audio}  # fmt: skip


def page_data(page) -> dict:
    text = page.read_text(encoding="utf-8")
    blob = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    return json.loads(blob.group(1))


def deltas(results, direction: str) -> np.ndarray:
    r0 = getattr(results["cosine"].queries, f"{direction}_rank")
    r1 = getattr(results["inverted-softmax"].queries, f"{direction}_rank")
    return (r0 - r1)[r0 > 0]


def test_the_page_holds_the_recorded_outcomes_and_the_summary(report) -> None:
    data = page_data(report["page"])
    q0 = report["results"]["cosine"].queries
    q1 = report["results"]["inverted-softmax"].queries
    assert data["systems"] == ["cosine", "inverted-softmax"]
    assert data["directions"] == ["t2a", "a2t"]
    t2a = data["t2a"]
    labelled = np.flatnonzero(q0.t2a_rank > 0)
    assert t2a["q"] == labelled.tolist()
    assert t2a["r0"] == q0.t2a_rank[labelled].tolist()
    assert t2a["r1"] == q1.t2a_rank[labelled].tolist()
    assert t2a["top1"] == q1.t2a_top[labelled].tolist()
    np.testing.assert_allclose(t2a["s1"], q1.t2a_score[labelled], atol=1e-4)
    with Cache(report["cache"]) as c:
        index = c.audio_index()
        assert data["captions"] == c.captions() and data["clips"] == c.audio_ids()
    assert t2a["gt"] == index[labelled].tolist()
    for clip, captions in zip(data["a2t"]["q"], data["a2t"]["gt"], strict=True):
        assert captions == np.flatnonzero(index == clip).tolist()
    d = deltas(report["results"], "t2a")
    line = f"text-to-audio {int((d > 0).sum()):,} of {len(d):,} queries improved, "
    line += f"{int((d < 0).sum()):,} worsened, {int((d == 0).sum()):,} unchanged"
    assert line in report["output"]
    assert f"wrote {report['page']}" in report["output"]
    links = data["audio"]
    assert [link is not None for link in links] == [i < AUDIO_CLIPS for i in range(len(links))]
    assert links[0] == f"../../audio/{report['ids'][0]}"  # relative to the page, not copied
    assert not any(p.suffix == ".wav" for p in report["page"].parent.iterdir())


def test_report_refusals_are_one_line_errors(report, tmp_path) -> None:
    cache = str(report["cache"])
    r = CliRunner().invoke(main, ["evaluate", cache, "--report", str(tmp_path / "r")])
    assert r.exit_code == 2 and "--head or --baseline" in r.output
    args = ["evaluate", cache, "--baseline", "inverted-softmax", "--audio-dir", str(tmp_path)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "only applies with --report" in r.output
    results = report["results"]
    with pytest.raises(ValueError, match="two rankings"):
        write_query_report(tmp_path / "x", cache, {"cosine": results["cosine"]})


STATE = """(() => {
  const rows = [...document.querySelectorAll('#rows tr')];
  return {
    count: document.getElementById('count').textContent,
    rows: rows.length,
    deltas: rows.map((r) =>
      Number(r.querySelector('td.delta').textContent.replace('\\u2212', '-'))),
    r0: rows.map((r) => Number(r.children[3].textContent)),
    queries: rows.map((r) => r.children[1].textContent),
    more: !document.getElementById('more').hidden,
    audio: [...document.querySelectorAll('#rows audio')].map((a) => a.src),
  };
})()"""


def set_control(page, control: str, value) -> dict:
    event = "input" if control in ("min-delta", "search") else "change"
    page.evaluate(
        f"(() => {{ const e = document.getElementById({json.dumps(control)}); "
        f"e.value = {json.dumps(str(value))}; e.dispatchEvent(new Event('{event}')); }})()"
    )
    return page.evaluate(STATE)


def matches(state: dict) -> int:
    return int(state["count"].split()[0])


def test_the_page_loads_filters_sorts_and_pages_in_headless_chromium(report) -> None:
    d = deltas(report["results"], "t2a")
    with open_page(report["page"].as_uri()) as page:
        assert page.evaluate("document.body.dataset.ready") == "1"
        state = page.evaluate(STATE)
        assert matches(state) == int((d != 0).sum())  # default: the changed queries
        assert state["rows"] == min(100, matches(state)) and state["more"] == (matches(state) > 100)
        assert state["deltas"] == sorted(state["deltas"], key=lambda x: -abs(x))  # biggest first
        assert matches(set_control(page, "show", "improved")) == int((d > 0).sum())
        assert matches(set_control(page, "show", "unchanged")) == int((d == 0).sum())
        state = set_control(page, "show", "worsened")
        assert matches(state) == int((d < 0).sum()) and all(x < 0 for x in state["deltas"])
        state = set_control(page, "min-delta", 3)
        assert matches(state) == int((d <= -3).sum())
        set_control(page, "min-delta", 0)
        state = set_control(page, "sort", "delta:asc")  # most worsened first
        assert state["deltas"][0] == d.min()
        state = set_control(page, "show", "all")
        assert matches(state) == len(d) and state["more"]
        page.evaluate("document.getElementById('more').click()")
        assert page.evaluate(STATE)["rows"] == min(len(d), 600)
        page.evaluate("document.querySelector('th[data-sort=r0]').click()")
        state = page.evaluate(STATE)
        assert state["r0"] == sorted(state["r0"], reverse=True)
        word = state["queries"][0].split()[-1]
        state = set_control(page, "search", word)
        assert matches(state) > 0 and all(word in q for q in state["queries"])
        set_control(page, "search", "")
        a2t = deltas(report["results"], "a2t")
        state = set_control(page, "direction", "a2t")
        assert matches(state) == len(a2t)  # the "all" filter stays
        audio = [p for p in state["audio"] if p]
        assert audio and all(p.startswith("file://") for p in audio)
        assert {p.rsplit("/", 1)[1] for p in audio} <= set(report["ids"][:AUDIO_CLIPS])
        shot = report["root"] / "report.png"
        set_control(page, "direction", "t2a")
        page.screenshot(shot)
        assert page.errors() == []
        assert {u.split(":", 1)[0] for u in page.requests} <= {"file", "data"}
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
