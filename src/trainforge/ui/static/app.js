// trainforge dashboard: hash-routed views over the JSON API; charts are inline SVG. No build step, no network
// beyond this server.
"use strict";

const view = document.getElementById("view");
const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83"];
const NOT_CURVES = new Set(["step", "epoch", "fold", "trial"]);
let timer = null;  // the current view's polling, stopped on navigation

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function fmt(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") {  // 4 significant digits (a tenth from 1000 up); exponents only below 1e-4 and from 1e6
    const a = Math.abs(v);
    if (Number.isInteger(v)) return String(v);
    if (a >= 1e6 || a < 1e-4) return v.toExponential(3);
    return String(Number(a >= 1000 ? v.toFixed(1) : v.toPrecision(4)));
  }
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}
async function api(path, body) {
  const opts = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const res = await fetch(path, opts);
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}
const statusBadge = s => `<span class="status ${esc(s)}">${esc(s)}</span>`;

// charts ------------------------------------------------------------------------------------------------------------
// Tick labels are measured in the font the stylesheet gives `.chart text` (11px), and the margins made to fit the
// widest: a fixed margin cut long labels (0.0001230, -1.235e+4) off at the chart's edge.
let measurer = null;
function textWidth(s) {
  measurer = measurer || document.createElement("canvas").getContext("2d");
  measurer.font = `11px ${getComputedStyle(document.body).fontFamily}`;
  return measurer.measureText(s).width;
}
// Round tick values (1, 2, 2.5 or 5 × 10^k apart) covering [lo, hi], and `digit`: the power of ten of the last
// digit that tells them apart.
function niceTicks(lo, hi) {
  const raw = (hi - lo) / 4, exp = Math.floor(Math.log10(raw)), f = raw / 10 ** exp;
  const [mult, digit] = f <= 1 ? [1, exp] : f <= 2 ? [2, exp] : f <= 2.5 ? [2.5, exp - 1] : f <= 5 ? [5, exp] : [10, exp + 1];
  const step = mult * 10 ** exp, values = [];
  for (let i = Math.floor(lo / step); i <= Math.ceil(hi / step); i++) values.push(i * step);
  return {values, digit};
}
function tickLabel(v, digit, top) {
  if (v === 0) return "0";
  if (top >= 1e6 || top < 1e-3) return v.toExponential(Math.max(0, Math.floor(Math.log10(top)) - digit));
  return v.toFixed(Math.max(0, -digit));
}
// series: [{label, points: [[x, y], ...]}]; returns an <svg> with one polyline (and dots) per series.
function lineChart(title, series, opts = {}) {
  const W = opts.width || 420, H = opts.height || 240, T = 24, B = 34, GAP = 4, EDGE = 6;
  const pts = series.flatMap(s => s.points).filter(p => p[1] !== null && isFinite(p[1]));
  const attrs = `class="chart" width="${W}" height="${H}" data-metric="${esc(title)}" data-points="${pts.length}"`;
  if (!pts.length) return `<svg ${attrs}><text class="title" x="${EDGE}" y="16">${esc(title)}: no points yet</text></svg>`;
  let [x0, x1] = [Math.min(...pts.map(p => p[0])), Math.max(...pts.map(p => p[0]))];
  let [y0, y1] = [Math.min(...pts.map(p => p[1])), Math.max(...pts.map(p => p[1]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const yt = niceTicks(y0, y1), xt = niceTicks(x0, x1);
  [y0, y1] = [yt.values[0], yt.values[yt.values.length - 1]];  // the axis spans whole ticks
  const yTop = Math.max(...yt.values.map(Math.abs)), xTop = Math.max(Math.abs(x0), Math.abs(x1));
  const yLabels = yt.values.map(y => [y, tickLabel(y, yt.digit, yTop)]);
  const xLabels = xt.values.filter(x => x >= x0 && x <= x1).map(x => [x, tickLabel(x, xt.digit, xTop)]);
  const half = i => (xLabels.length ? textWidth(xLabels.at(i)[1]) / 2 : 0);  // x labels are centred on their ticks
  const L = Math.ceil(Math.max(Math.max(...yLabels.map(([, s]) => textWidth(s))) + GAP, half(0)) + EDGE);
  const R = Math.ceil(Math.max(12, half(-1) + EDGE));
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R), sy = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  let svg = `<svg ${attrs}><text class="title" x="${L}" y="16">${esc(title)}</text>`;
  for (const [y, label] of yLabels) {  // horizontal grid with y labels
    svg += `<line x1="${L}" x2="${W - R}" y1="${sy(y)}" y2="${sy(y)}" stroke="#eaeef2"/>` +
           `<text class="ytick" x="${L - GAP}" y="${sy(y) + 4}" text-anchor="end">${esc(label)}</text>`;
  }
  for (const [x, label] of xLabels) {
    svg += `<text class="xtick" x="${sx(x)}" y="${H - B + 14}" text-anchor="middle">${esc(label)}</text>`;
  }
  svg += `<text x="${(L + W - R) / 2}" y="${H - 4}" text-anchor="middle">${esc(opts.xlabel || "step")}</text>`;
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    const p = s.points.filter(q => q[1] !== null && isFinite(q[1]));
    if (!p.length) return;
    if (!s.dotsOnly) svg += `<polyline fill="none" stroke="${color}" stroke-width="1.8" points="${p.map(q => `${sx(q[0])},${sy(q[1])}`).join(" ")}"/>`;
    if (p.length < 40 || s.dotsOnly) svg += p.map(q => `<circle cx="${sx(q[0])}" cy="${sy(q[1])}" r="${s.dotsOnly ? 4 : 2.6}" fill="${color}"/>`).join("");
    if (series.length > 1) svg += `<text x="${W - R - 4}" y="${T + 12 + 13 * i}" text-anchor="end" style="fill:${color}">${esc(s.label)}</text>`;
  });
  return svg + "</svg>";
}

// metric rows → {key: [[step, value], ...]} for every numeric key
function curves(rows) {
  const out = {};
  rows.forEach((row, i) => {
    const x = typeof row.step === "number" ? row.step : i;
    for (const [k, v] of Object.entries(row)) {
      if (NOT_CURVES.has(k) || typeof v !== "number") continue;
      (out[k] = out[k] || []).push([x, v]);
    }
  });
  return out;
}
const ORDER = k => (k.includes("loss") ? 0 : k.startsWith("eval") || k.includes("accuracy") ? 1 : 2);
function curveKeys(c) {
  return Object.keys(c).sort((a, b) => ORDER(a) - ORDER(b) || a.localeCompare(b));
}
// a metric logged once (a final eval score, a runtime) makes a chart of one dot: it goes in a table of values instead
const charted = points => points.length > 1;

// runs table --------------------------------------------------------------------------------------------------------
async function showRuns() {
  view.innerHTML = `<h2>Runs</h2>
    <div class="toolbar"><input type="text" id="filter" placeholder="filter: name, status, method, model…" size="40">
    <button id="compare-btn" disabled>Compare selected (2)</button><span class="muted" id="run-count"></span></div>
    <div id="runs-table"></div>`;
  // the columns of `trainforge runs list`: a language-model run's headline is after.*, its `score` stays empty
  const [runs, columns] = await Promise.all([api("/api/runs"), api("/api/summary-keys")]);
  const filter = document.getElementById("filter"), button = document.getElementById("compare-btn");
  const draw = () => {
    const q = filter.value.toLowerCase();
    const shown = runs.filter(r => !q || [r.name, r.status, ...columns.map(k => r.summary[k])]
      .some(v => String(v ?? "").toLowerCase().includes(q)));
    document.getElementById("run-count").textContent = `${shown.length} of ${runs.length} runs`;
    document.getElementById("runs-table").innerHTML = `<table><tr><th></th><th>run</th><th>status</th>
      ${columns.map(k => `<th>${esc(k)}</th>`).join("")}<th>started</th></tr>
      ${shown.slice().reverse().map(r => `<tr data-run="${esc(r.name)}"><td><input type="checkbox" class="pick" value="${esc(r.name)}"></td>
        <td><a href="#run/${encodeURIComponent(r.name)}">${esc(r.name)}</a></td><td>${statusBadge(r.status)}</td>
        ${columns.map(k => `<td class="${typeof r.summary[k] === "number" ? "num" : ""}">${esc(r.summary[k] === undefined ? "" : fmt(r.summary[k]))}</td>`).join("")}
        <td class="muted">${r.started ? new Date(r.started * 1000).toLocaleString() : ""}</td></tr>`).join("")}</table>`;
    const picks = () => [...document.querySelectorAll(".pick:checked")].map(c => c.value);
    document.querySelectorAll(".pick").forEach(c => c.onchange = () => { button.disabled = picks().length !== 2; });
    button.onclick = () => { const [a, b] = picks(); location.hash = `#compare/${encodeURIComponent(a)}/${encodeURIComponent(b)}`; };
  };
  filter.oninput = draw;
  draw();
}

// one run, polled while it trains ---------------------------------------------------------------------------------
async function showRun(name) {
  view.innerHTML = `<h2>Run ${esc(name)} <span id="run-status"></span></h2>
    <div id="run-links" class="toolbar"></div><div id="charts" class="charts"></div><div id="single-metrics"></div>
    <div class="cols"><div><h3>Summary</h3><div id="summary"></div></div>
    <div style="flex:1;min-width:30em"><h3>Config</h3><pre id="config"></pre></div></div>
    <h3>Log</h3><pre id="log"></pre>`;
  const refresh = async () => {
    let run;
    try { run = await api(`/api/runs/${encodeURIComponent(name)}`); } catch (e) {
      view.innerHTML = `<div class="error">${esc(e.message)}</div>`; return false;
    }
    document.getElementById("run-status").innerHTML = statusBadge(run.status);
    document.getElementById("run-links").innerHTML = (run.stoppable ? `<button id="stop-btn" title="Ctrl-C: the last checkpoint stays resumable">Stop</button>` : "")
      + (run.stages || []).map(s => `<a href="#run/${encodeURIComponent(s)}">${esc(s)}</a>`).join(" → ")
      + (run.generative ? `<a href="#chat/${encodeURIComponent(name)}">Chat with this run</a>` : "");
    const stop = document.getElementById("stop-btn");
    if (stop) stop.onclick = async () => {
      stop.disabled = true;
      try { await api(`/api/runs/${encodeURIComponent(name)}/stop`, {}); } catch (e) { stop.title = e.message; }
    };
    const c = curves(run.metrics), keys = curveKeys(c), once = keys.filter(k => !charted(c[k]));
    document.getElementById("charts").innerHTML = keys.filter(k => charted(c[k])).map(k => lineChart(k, [{label: k, points: c[k]}])).join("")
      || (keys.length ? "" : `<p class="muted">No metrics yet.</p>`);
    document.getElementById("single-metrics").innerHTML = once.length ? `<h3>Logged once</h3><table>${once.map(k =>
      `<tr data-metric="${esc(k)}"><th>${esc(k)}</th><td class="num">${esc(fmt(c[k][0][1]))}</td></tr>`).join("")}</table>` : "";
    document.getElementById("summary").innerHTML = `<table>${Object.entries(run.summary)
      .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(fmt(v))}</td></tr>`).join("")}</table>`;
    document.getElementById("config").textContent = run.config;
    const log = document.getElementById("log");
    log.textContent = run.log || run.log_note || "";
    log.classList.toggle("muted", !run.log && Boolean(run.log_note));
    log.scrollTop = log.scrollHeight;
    // a stopped run's status is final before its process has exited: poll until the Stop button can go
    return run.status === "running" || run.status === "starting" || run.stoppable;
  };
  if (await refresh()) {
    timer = setInterval(async () => { if (!(await refresh())) { clearInterval(timer); timer = null; } }, 1000);
  }
}

// comparison --------------------------------------------------------------------------------------------------------
async function showCompare(a, b) {
  const data = await api(`/api/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
  const ca = curves(data.metrics[a]), cb = curves(data.metrics[b]);
  const keys = [...new Set([...curveKeys(ca), ...curveKeys(cb)])].sort((x, y) => ORDER(x) - ORDER(y) || x.localeCompare(y));
  const drawn = keys.filter(k => charted(ca[k] || []) || charted(cb[k] || []));
  const once = keys.filter(k => !drawn.includes(k)).map(k => [k, ca[k]?.[0][1], cb[k]?.[0][1]]);
  const rows = (list, th) => `<table><tr><th>${th}</th><th>${esc(a)}</th><th>${esc(b)}</th></tr>${list.map(([k, x, y]) =>
    `<tr class="${JSON.stringify(x) !== JSON.stringify(y) ? "diff" : ""}"><td>${esc(k)}</td><td>${esc(fmt(x))}</td><td>${esc(fmt(y))}</td></tr>`).join("")}</table>`;
  view.innerHTML = `<h2>Compare <a href="#run/${encodeURIComponent(a)}">${esc(a)}</a> and <a href="#run/${encodeURIComponent(b)}">${esc(b)}</a></h2>
    <div class="charts">${drawn.map(k => lineChart(k, [{label: a, points: ca[k] || []}, {label: b, points: cb[k] || []}])).join("")}</div>
    ${once.length ? `<h3>Logged once</h3><div id="compare-single">${rows(once, "metric")}</div>` : ""}
    <div class="cols"><div><h3>Summary</h3><div id="compare-summary">${rows(data.summary, "key")}</div></div>
    <div><h3>Config differences</h3><div id="compare-config">${data.config.length ? rows(data.config, "config key")
      : `<p class="muted">The configs are the same.</p>`}</div></div></div>`;
}

// the launch form, generated from RunConfig's JSON schema ---------------------------------------------------------
let schema = null;
function resolve(node) {
  if (node.$ref) return {...schema.$defs[node.$ref.split("/").pop()], description: node.description || schema.$defs[node.$ref.split("/").pop()].description};
  if (node.anyOf) {
    const real = node.anyOf.filter(t => t.type !== "null");
    if (real.length === 1) return {...resolve(real[0]), description: node.description, default: node.default, nullable: true};
  }
  return node;
}
function kindOf(node) {
  if (node.enum) return "enum";
  if (node.type === "boolean") return "bool";
  if (node.type === "integer" || node.type === "number") return "number";
  if (node.type === "string") return "string";
  if (node.type === "object" && node.properties) return "section";
  return "yaml";  // lists, mappings, unions: typed as inline YAML, read like a CLI override
}
function fieldHtml(key, node, required) {
  const n = resolve(node), kind = kindOf(n);
  if (kind === "section") {
    const open = ["model", "data", "method", "training"].includes(key) ? " open" : "";
    return `<details class="section"${open}><summary>${esc(key.split(".").pop())}</summary>
      ${n.description ? `<div class="muted">${esc(n.description)}</div>` : ""}
      ${Object.entries(n.properties).map(([k, v]) => fieldHtml(`${key}.${k}`, v, (n.required || []).includes(k))).join("")}</details>`;
  }
  const def = node.default !== undefined ? node.default : n.default;
  const shown = def === undefined ? (required ? "required" : "") : def === null ? "none" : typeof def === "object" ? JSON.stringify(def) : String(def);
  let input;
  const attrs = `data-key="${esc(key)}" data-kind="${kind}" id="f-${esc(key)}" name="${esc(key)}"`;
  if (kind === "enum" || kind === "bool") {
    const options = kind === "bool" ? [true, false] : n.enum;
    input = `<select ${attrs}><option value="">(default: ${esc(shown)})</option>${options.map(o => `<option value="${esc(o)}">${esc(o)}</option>`).join("")}</select>`;
  } else if (kind === "yaml") {
    input = `<textarea ${attrs} rows="1" placeholder="${esc(shown)}"></textarea>`;
  } else {
    input = `<input type="text" ${attrs} placeholder="${esc(shown)}">`;
  }
  return `<div class="field"><label for="f-${esc(key)}">${esc(key.split(".").pop())}${required ? " *" : ""}</label>${input}
    <div class="desc">${esc(n.description || "")}</div></div>`;
}
function overrides() {
  const pairs = [];
  document.querySelectorAll("[data-key]").forEach(el => {
    const v = el.value.trim();
    if (v === "") return;  // unset: the schema's default applies, as when the key is left out of a YAML file
    const kind = el.dataset.kind;
    pairs.push(`${el.dataset.key}=${kind === "string" || (kind === "enum" && isNaN(Number(v))) ? JSON.stringify(v) : v}`);
  });
  return pairs;
}
function fill(obj, prefix = "") {
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix + k, el = document.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (el) el.value = el.dataset.kind === "yaml" ? JSON.stringify(v) : v === null ? "" : String(v);
    else if (v && typeof v === "object" && !Array.isArray(v)) fill(v, key + ".");
  }
}
async function showLaunch() {
  schema = schema || await api("/api/schema");
  const examples = await api("/api/examples");
  const top = Object.entries(schema.properties);
  view.innerHTML = `<h2>Launch a run</h2>
    <p class="muted">The form is the run config's schema: empty fields keep their defaults, as keys left out of a YAML file do.
      It is checked by the same loader as <code>trainforge train</code>. <code>tracking.runs_dir</code> is this dashboard's runs folder.</p>
    <div class="toolbar"><label>Start from example <select id="example"><option value="">(none)</option>
      ${examples.map(e => `<option value="${esc(e.name)}" data-stages="${e.stages}">${esc(e.name)}${e.stages ? " (stage chain)" : ""}</option>`).join("")}</select></label>
      <button id="expand-btn">Expand all</button><button id="validate-btn">Validate</button><button id="launch-btn" class="primary">Launch</button></div>
    <div id="launch-error"></div>
    <details class="section" id="yaml-section"><summary>from YAML (a config file's text; needed for <code>stages:</code> chains)</summary>
      <div class="muted">When set, this is the config, and the fields below override it, as <code>trainforge train FILE key=value</code> does.</div>
      <textarea id="yaml-text" rows="14" spellcheck="false"></textarea></details>
    <form id="launch-form" onsubmit="return false">
      <details class="section" open><summary>run</summary>${top.filter(([, v]) => kindOf(resolve(v)) !== "section")
        .map(([k, v]) => fieldHtml(k, v, (schema.required || []).includes(k))).join("")}</details>
      ${top.filter(([, v]) => kindOf(resolve(v)) === "section").map(([k, v]) => fieldHtml(k, v, (schema.required || []).includes(k))).join("")}
    </form><h3>Config</h3><pre id="launch-yaml" class="muted">Validate to see the full config.</pre>`;
  const yamlText = document.getElementById("yaml-text");
  document.getElementById("example").onchange = async e => {
    document.getElementById("launch-form").reset();
    yamlText.value = "";
    const picked = e.target.selectedOptions[0];
    if (!e.target.value) return;
    if (picked.dataset.stages === "true") {  // a chain is not one form: its file's text, edited as YAML
      yamlText.value = (await api(`/api/examples/${encodeURIComponent(e.target.value)}/yaml`)).yaml;
      document.getElementById("yaml-section").open = true;
    } else fill(await api(`/api/examples/${encodeURIComponent(e.target.value)}`));
  };
  const submit = async launch => {
    const box = document.getElementById("launch-error");
    box.innerHTML = "";
    try {
      const res = await api("/api/launch", {overrides: overrides(), launch, yaml: yamlText.value.trim() ? yamlText.value : null});
      document.getElementById("launch-yaml").textContent = res.yaml;
      if (launch) location.hash = `#run/${encodeURIComponent(res.name)}`;
      else box.innerHTML = `<p class="ok">Valid: ${res.stages ? `stage chain ${esc(res.name)}, runs ${esc(res.stages.join(", "))}` : `run ${esc(res.name)}`}.</p>`;
    } catch (err) { box.innerHTML = `<div class="error" id="config-error">${esc(err.message)}</div>`; }
    box.scrollIntoView({block: "nearest"});
  };
  document.getElementById("expand-btn").onclick = () => document.querySelectorAll("details.section").forEach(d => { d.open = true; });
  document.getElementById("validate-btn").onclick = () => submit(false);
  document.getElementById("launch-btn").onclick = () => submit(true);
}

// chat --------------------------------------------------------------------------------------------------------------
async function showChat(name) {
  const runs = (await api("/api/runs")).filter(r => r.generative);
  view.innerHTML = `<h2>Chat</h2><div class="toolbar"><label>Run <select id="chat-run">${runs.map(r =>
      `<option ${r.name === name ? "selected" : ""}>${esc(r.name)}</option>`).join("")}</select></label>
    <label>max tokens <input type="text" id="chat-max" value="64" size="5"></label>
    <button id="chat-clear">Clear</button></div>
    ${runs.length ? "" : `<p class="muted">No completed generative run yet.</p>`}
    <div class="chatlog" id="chatlog"><p class="muted">The model loads on the first message.</p></div>
    <div class="toolbar"><input type="text" id="chat-input" size="70" placeholder="Say something…">
    <button id="chat-send" class="primary">Send</button></div><div id="chat-error"></div>`;
  let messages = [];
  const log = document.getElementById("chatlog"), input = document.getElementById("chat-input");
  const draw = () => { log.innerHTML = messages.map(m => `<div class="msg ${m.role}">${esc(m.content)}</div>`).join(""); };
  document.getElementById("chat-run").onchange = () => { messages = []; draw(); };
  document.getElementById("chat-clear").onclick = () => { messages = []; draw(); };
  const send = async () => {
    if (!input.value.trim()) return;
    messages.push({role: "user", content: input.value});
    input.value = "";
    draw();
    log.insertAdjacentHTML("beforeend", `<div class="msg assistant muted" id="thinking">…</div>`);
    document.getElementById("chat-error").innerHTML = "";
    try {
      const res = await api("/api/chat", {run: document.getElementById("chat-run").value, messages,
                                          max_tokens: Number(document.getElementById("chat-max").value) || 64});
      messages.push({role: "assistant", content: res.reply});
      draw();
      log.lastElementChild.classList.add("chat-reply");
      log.lastElementChild.title = `${res.completion_tokens} tokens in ${res.seconds} s`;
    } catch (err) {
      messages.pop();
      draw();
      document.getElementById("chat-error").innerHTML = `<div class="error">${esc(err.message)}</div>`;
    }
  };
  document.getElementById("chat-send").onclick = send;
  input.onkeydown = e => { if (e.key === "Enter") send(); };
}

// tuning studies ----------------------------------------------------------------------------------------------------
async function showStudies() {
  const studies = await api("/api/studies");
  view.innerHTML = `<h2>Tuning studies</h2>${studies.length ? `<table><tr><th>study</th><th>trials</th><th>best</th><th>direction</th><th>storage</th></tr>
    ${studies.map(s => s.error ? `<tr><td colspan="4" class="error">${esc(s.error)}</td><td>${esc(s.storage)}</td></tr>`
      : `<tr><td><a href="#study/${encodeURIComponent(s.storage)}/${encodeURIComponent(s.name)}">${esc(s.name)}</a></td>
         <td class="num">${s.trials}</td><td class="num">${esc(fmt(s.best))}</td><td>${esc(s.direction)}</td>
         <td class="muted">${esc(s.storage)}</td></tr>`).join("")}</table>`
    : `<p class="muted">No studies yet: run <code>trainforge tune CONFIG</code>.</p>`}`;
}
async function showStudy(storage, name) {
  const s = await api(`/api/study?name=${encodeURIComponent(name)}&storage=${encodeURIComponent(storage)}`);
  const done = s.trials.filter(t => t.state === "complete" && t.value !== null);
  const better = s.direction === "maximize" ? Math.max : Math.min;
  let best = null;
  const bestSoFar = done.map(t => [t.number, best = best === null ? t.value : better(best, t.value)]);
  const params = [...new Set(s.trials.flatMap(t => Object.keys(t.params)))];
  view.innerHTML = `<h2>Study ${esc(name)}</h2><p class="muted">${esc(s.direction)} · ${esc(storage)}</p>
    <div class="charts">${lineChart("trial value", [{label: "best so far", points: bestSoFar, color: COLORS[1]},
      {label: "trial", points: done.map(t => [t.number, t.value]), dotsOnly: true, color: COLORS[0]}],
      {xlabel: "trial", width: 640, height: 300})}</div>
    <h3>Trials</h3><table><tr><th>#</th><th>state</th><th>value</th>${params.map(p => `<th>${esc(p)}</th>`).join("")}</tr>
    ${s.trials.map(t => `<tr><td>${t.number}</td><td>${esc(t.state)}</td><td class="num">${esc(fmt(t.value))}</td>
      ${params.map(p => `<td>${esc(fmt(t.params[p]))}</td>`).join("")}</tr>`).join("")}</table>`;
}

// routing -----------------------------------------------------------------------------------------------------------
async function route() {
  if (timer) { clearInterval(timer); timer = null; }
  const [page, ...rest] = location.hash.slice(1).split("/").map(decodeURIComponent);
  try {
    if (page === "run") await showRun(rest[0]);
    else if (page === "launch") await showLaunch();
    else if (page === "compare") await showCompare(rest[0], rest[1]);
    else if (page === "chat") await showChat(rest[0]);
    else if (page === "studies") await showStudies();
    else if (page === "study") await showStudy(rest.slice(0, -1).join("/"), rest[rest.length - 1]);
    else await showRuns();
  } catch (err) { view.innerHTML = `<div class="error">${esc(err.message)}</div>`; }
}
window.addEventListener("hashchange", route);
route();
