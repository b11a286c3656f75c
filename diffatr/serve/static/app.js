// diffatr serve: the page's only script. Asks /api/search and shows the hits as a table with a
// player per clip (when the server serves the audio folder) and the clip's captions.
"use strict";

const $ = (id) => document.getElementById(id);
let serverInfo = { audio: false, text: false, examples: false };

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function audioUrl(clipId) {
  return "/audio/" + clipId.split("/").map(encodeURIComponent).join("/");
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function render(found) {
  const results = $("results");
  results.replaceChildren();
  for (const r of found.results) {
    const title = document.createElement("h2");
    title.textContent = (r.kind === "audio" ? "sounds like " : "") + r.query;
    results.appendChild(title);
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    const columns = ["rank", "score", "clip"];
    if (serverInfo.audio) columns.push("listen");
    if (r.hits.some((h) => "captions" in h)) columns.push("captions");
    for (const name of columns) {
      const th = document.createElement("th");
      th.textContent = name;
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (const h of r.hits) {
      const row = body.insertRow();
      row.className = "hit";
      cell(row, String(h.rank), "num");
      cell(row, h.score.toFixed(4), "num");
      cell(row, h.clip_id, "clip");
      if (serverInfo.audio) {
        const td = cell(row, "");
        const player = document.createElement("audio");
        player.controls = true;
        player.preload = "none";
        player.src = audioUrl(h.clip_id);
        td.appendChild(player);
      }
      if (columns.includes("captions")) cell(row, (h.captions || []).join(" | "));
    }
    results.appendChild(table);
  }
  const n = found.results.reduce((sum, r) => sum + r.hits.length, 0);
  setStatus(`${n} clips, ${found.ranking} ranking, ${found.index} search`, false);
  document.body.dataset.ready = "1";
}

async function ask(response) {
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

async function searchText(event) {
  event.preventDefault();
  const q = $("q").value.trim();
  if (!q) return setStatus("type a few words first", true);
  setStatus("searching…", false);
  try {
    const url = `/api/search?q=${encodeURIComponent(q)}&k=${encodeURIComponent($("k").value)}`;
    render(await ask(await fetch(url)));
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function searchExample(event) {
  event.preventDefault();
  const file = $("example").files[0];
  if (!file) return setStatus("choose an audio file first", true);
  setStatus("embedding the example…", false);
  const form = new FormData();
  form.append("audio", file);
  try {
    const url = `/api/search?k=${encodeURIComponent($("k").value)}`;
    render(await ask(await fetch(url, { method: "POST", body: form })));
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function start() {
  try {
    serverInfo = await ask(await fetch("/api/info"));
    $("info").textContent = `${serverInfo.cache}: ${serverInfo.clips} clips; ${serverInfo.encoder}`;
    $("text-form").hidden = !serverInfo.text;
    $("audio-form").hidden = !serverInfo.examples;
  } catch (e) {
    setStatus(e.message, true);
  }
  $("text-form").addEventListener("submit", searchText);
  $("audio-form").addEventListener("submit", searchExample);
  document.body.dataset.loaded = "1";
}

start();
