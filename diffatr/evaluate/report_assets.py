"""The style sheet and script inlined into the per-query report (html_report.py writes the page).

Reads and writes nothing. The script renders the query table from the page's JSON blob
(`<script type="application/json" id="report-data">`, built by html_report.py): it filters
(improved / worsened / unchanged / changed / all, a minimum rank change, a text search), sorts
(column headers and a sort menu) and renders PAGE rows at a time, so a 4,785-query page opens
with a hundred rows of DOM, not thousands. Text goes in through textContent only.
"""

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px;
  padding: 0 1em; color: #1b1b1b; background: #fff; }
h1 { font-size: 1.5em; margin: 0 0 .2em; }
h2 { font-size: 1.15em; margin: 1.4em 0 .5em; border-bottom: 1px solid #ddd; }
.meta { color: #555; margin: 0; }
.summary { font-size: 1.1em; background: #f3f6fa; border-left: 4px solid #1f77b4;
  padding: .5em .8em; margin: 1em 0; }
table.metrics { border-collapse: collapse; }
table.metrics th, table.metrics td { padding: .25em .7em; text-align: right;
  border-bottom: 1px solid #e4e4e4; }
table.metrics th:first-child, table.metrics td:first-child,
table.metrics td:nth-child(2) { text-align: left; }
.curves { display: flex; flex-wrap: wrap; gap: 1.5em; }
.curves svg { background: #fcfcfc; border: 1px solid #e4e4e4; }
.controls { display: flex; flex-wrap: wrap; gap: .6em 1.2em; align-items: center;
  background: #f7f7f7; padding: .6em .8em; border-radius: 4px; }
.controls label { white-space: nowrap; }
.controls input[type=number] { width: 5em; }
.controls input[type=search] { width: 16em; }
#count { color: #333; font-weight: 600; }
table.queries { border-collapse: collapse; width: 100%; margin-top: .6em; table-layout: fixed; }
table.queries th { position: sticky; top: 0; background: #eef1f4; text-align: left;
  padding: .35em .4em; border-bottom: 2px solid #ccd; font-weight: 600; }
table.queries th.sortable { cursor: pointer; user-select: none; }
table.queries th.sortable:hover { background: #dde3ea; }
table.queries th[aria-sort=ascending]::after { content: " \\25B2"; }
table.queries th[aria-sort=descending]::after { content: " \\25BC"; }
table.queries td { vertical-align: top; padding: .35em .4em; border-bottom: 1px solid #e6e6e6;
  overflow-wrap: anywhere; }
table.queries td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.up td:first-child { border-left: 4px solid #2ca02c; }
tr.down td:first-child { border-left: 4px solid #d62728; }
.delta.up { color: #1a7f1a; font-weight: 600; }
.delta.down { color: #c01f1f; font-weight: 600; }
ol.top { margin: 0; padding-left: 1.6em; }
ol.top li.hit { font-weight: 600; color: #1a5f9e; }
ol.top .score { display: inline-block; min-width: 4.4em; color: #666;
  font-variant-numeric: tabular-nums; }
ul.gt { margin: 0; padding-left: 1.1em; }
audio { display: block; height: 28px; width: 100%; max-width: 260px; margin-top: .2em; }
button.play { border: 1px solid #bbb; background: #fff; border-radius: 3px; cursor: pointer;
  font-size: .75em; margin-left: .3em; padding: 0 .35em; }
#more { margin: .8em 0; padding: .3em 1.2em; }
#playerbar { position: sticky; bottom: 0; background: #eef1f4; padding: .4em .8em;
  display: flex; gap: 1em; align-items: center; border-top: 1px solid #ccd; }
#playerbar audio { max-width: 420px; margin: 0; }
"""

JS = r"""
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const PAGE = 100;
  const $ = (id) => document.getElementById(id);
  const state = { dir: D.directions[0], show: "changed", minDelta: 0, search: "",
    sort: "absdelta", desc: true, limit: PAGE };
  let view = [];

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const isT2a = () => state.dir === "t2a";
  const gtList = (Q, i) => (isT2a() ? [Q.gt[i]] : Q.gt[i]);
  const clipUrl = (clip) => (D.audio ? D.audio[clip] : null);

  function audioPlayer(clip) {
    const url = clipUrl(clip);
    if (!url) return null;
    const a = el("audio");
    a.controls = true;
    a.preload = "none";
    a.src = url;
    return a;
  }

  function playButton(clip) {
    if (!clipUrl(clip)) return null;
    const b = el("button", "play", "\u25B6");
    b.type = "button";
    b.title = "play " + D.clips[clip];
    b.dataset.clip = String(clip);
    return b;
  }

  const haystacks = {};
  function searchable(Q, i) {
    const memo = haystacks[state.dir] || (haystacks[state.dir] = []);
    if (memo[i] === undefined) memo[i] = haystack(Q, i);
    return memo[i];
  }
  function haystack(Q, i) {
    const q = isT2a() ? D.captions[Q.q[i]] : D.clips[Q.q[i]];
    const gt = gtList(Q, i).map((g) => (isT2a() ? D.clips[g] : D.captions[g]));
    return (q + "\n" + gt.join("\n")).toLowerCase();
  }

  function compute() {
    const Q = D[state.dir];
    const needle = state.search.trim().toLowerCase();
    const out = [];
    for (let i = 0; i < Q.q.length; i++) {
      const d = Q.r0[i] - Q.r1[i];
      if (state.show === "improved" && d <= 0) continue;
      if (state.show === "worsened" && d >= 0) continue;
      if (state.show === "unchanged" && d !== 0) continue;
      if (state.show === "changed" && d === 0) continue;
      if (Math.abs(d) < state.minDelta) continue;
      if (needle && !searchable(Q, i).includes(needle)) continue;
      out.push(i);
    }
    const keys = {
      q: (i) => Q.q[i],
      r0: (i) => Q.r0[i],
      r1: (i) => Q.r1[i],
      delta: (i) => Q.r0[i] - Q.r1[i],
      absdelta: (i) => Math.abs(Q.r0[i] - Q.r1[i]),
    };
    const key = keys[state.sort];
    const sign = state.desc ? -1 : 1;
    out.sort((a, b) => sign * (key(a) - key(b)) || Q.q[a] - Q.q[b]);
    view = out;
  }

  function topList(Q, i, which) {
    const ol = el("ol", "top");
    const top = Q["top" + which][i];
    const scores = Q["s" + which][i];
    const gt = gtList(Q, i);
    top.forEach((c, r) => {
      const li = el("li", gt.includes(c) ? "hit" : "");
      li.appendChild(el("span", "score", scores[r].toFixed(3)));
      li.appendChild(el("span", "name", isT2a() ? D.clips[c] : D.captions[c]));
      const b = isT2a() ? playButton(c) : null;
      if (b) li.appendChild(b);
      ol.appendChild(li);
    });
    return ol;
  }

  function row(Q, i) {
    const d = Q.r0[i] - Q.r1[i];
    const tr = el("tr", d > 0 ? "up" : d < 0 ? "down" : "");
    tr.appendChild(el("td", "num", String(Q.q[i])));
    const query = el("td", "query");
    const gt = el("td", "gt");
    if (isT2a()) {
      query.textContent = D.captions[Q.q[i]];
      gt.appendChild(el("div", "name", D.clips[Q.gt[i]]));
      const a = audioPlayer(Q.gt[i]);
      if (a) gt.appendChild(a);
    } else {
      query.appendChild(el("div", "name", D.clips[Q.q[i]]));
      const a = audioPlayer(Q.q[i]);
      if (a) query.appendChild(a);
      const ul = el("ul", "gt");
      Q.gt[i].forEach((j) => ul.appendChild(el("li", "", D.captions[j])));
      gt.appendChild(ul);
    }
    tr.appendChild(query);
    tr.appendChild(gt);
    tr.appendChild(el("td", "num", String(Q.r0[i])));
    tr.appendChild(el("td", "num", String(Q.r1[i])));
    const sign = d > 0 ? "+" : d < 0 ? "\u2212" : "";
    tr.appendChild(el("td", "num delta " + (d > 0 ? "up" : d < 0 ? "down" : ""),
      sign + Math.abs(d)));
    const t0 = el("td");
    t0.appendChild(topList(Q, i, 0));
    const t1 = el("td");
    t1.appendChild(topList(Q, i, 1));
    tr.appendChild(t0);
    tr.appendChild(t1);
    return tr;
  }

  function render() {
    const Q = D[state.dir];
    const n = Math.min(state.limit, view.length);
    const frag = document.createDocumentFragment();
    for (let v = 0; v < n; v++) frag.appendChild(row(Q, view[v]));
    $("rows").replaceChildren(frag);
    $("count").textContent = view.length + " of " + Q.q.length + " queries match" +
      (n < view.length ? " (showing the first " + n + ")" : "");
    $("more").hidden = n >= view.length;
    $("query-head").textContent = isT2a() ? "query (caption)" : "query (clip)";
    $("gt-head").textContent = isT2a() ? "ground-truth clip" : "ground-truth captions";
    document.querySelectorAll("th.sortable").forEach((th) => {
      const on = th.dataset.sort === state.sort;
      th.setAttribute("aria-sort", on ? (state.desc ? "descending" : "ascending") : "none");
    });
    $("sort").value = state.sort + (state.desc ? ":desc" : ":asc");
  }

  function update(reset) {
    if (reset) state.limit = PAGE;
    compute();
    render();
  }

  $("direction").addEventListener("change", (e) => { state.dir = e.target.value; update(true); });
  $("show").addEventListener("change", (e) => { state.show = e.target.value; update(true); });
  $("min-delta").addEventListener("input", (e) => {
    state.minDelta = Math.max(0, Number(e.target.value) || 0);
    update(true);
  });
  $("search").addEventListener("input", (e) => { state.search = e.target.value; update(true); });
  $("sort").addEventListener("change", (e) => {
    const [key, order] = e.target.value.split(":");
    state.sort = key;
    state.desc = order === "desc";
    update(true);
  });
  document.querySelectorAll("th.sortable").forEach((th) => {
    th.addEventListener("click", () => {
      if (state.sort === th.dataset.sort) state.desc = !state.desc;
      else { state.sort = th.dataset.sort; state.desc = th.dataset.sort !== "q"; }
      update(false);
    });
  });
  $("more").addEventListener("click", () => { state.limit += PAGE * 5; render(); });
  $("rows").addEventListener("click", (e) => {
    const b = e.target.closest("button.play");
    if (!b) return;
    const player = $("player");
    player.src = clipUrl(Number(b.dataset.clip));
    $("now").textContent = D.clips[Number(b.dataset.clip)];
    player.play().catch(() => { $("now").textContent += " (cannot play this file)"; });
  });
  const dirs = $("direction");
  D.directions.forEach((d) => {
    const o = el("option", "", d === "t2a" ? "text-to-audio" : "audio-to-text");
    o.value = d;
    dirs.appendChild(o);
  });
  $("playerbar").hidden = !D.audio;
  update(true);
  document.body.dataset.ready = "1";
})();
"""
