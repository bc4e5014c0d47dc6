// The raysft console. The token lives in sessionStorage (this tab only) and goes with every API call;
// event streams are read with fetch (EventSource cannot send an Authorization header).
"use strict";
const STATES = ["QUEUED", "STARTING", "RUNNING", "CANCELLING", "SUCCEEDED", "FAILED", "CANCELLED"];
const $ = (id) => document.getElementById(id);
let timer = null, streamAbort = null;

function token() { return sessionStorage.getItem("raysftToken") || ""; }

async function api(path, options = {}) {
  const response = await fetch(path, {...options, headers: {...(options.headers || {}), Authorization: "Bearer " + token()}});
  if (response.status === 401) { sessionStorage.removeItem("raysftToken"); route(); throw new Error("unauthenticated"); }
  if (!response.ok) { const body = await response.json().catch(() => ({})); throw new Error((body.error || {}).message || response.statusText); }
  return response.status === 204 ? null : response.json();
}

function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
function age(iso) {
  if (!iso) return ""; const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  return s < 60 ? Math.round(s) + "s" : s < 3600 ? Math.round(s / 60) + "m" : s < 86400 ? Math.round(s / 3600) + "h" : Math.round(s / 86400) + "d";
}
function bar(p) { const b = el("div", undefined, "bar"), f = el("div"); const t = (p && p.total_steps) || 0;
  f.style.width = (t ? Math.min(100, 100 * p.step / t) : 0) + "%"; b.appendChild(f); return b; }

// A line chart in SVG: series = [{points: [[x, y]], color}].
function chart(svg, series) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const all = series.flatMap((s) => s.points); if (!all.length) return;
  const W = +svg.getAttribute("width"), H = +svg.getAttribute("height"), pad = 36;
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const X = (x) => pad + (W - 2 * pad) * (x - x0) / (x1 - x0), Y = (y) => H - pad + (2 * pad - H) * (y - y0) / (y1 - y0);
  const ns = "http://www.w3.org/2000/svg";
  for (const [text, x, y] of [[y1.toPrecision(3), 2, pad], [y0.toPrecision(3), 2, H - pad], ["step " + x1, W - pad - 40, H - 8]]) {
    const t = document.createElementNS(ns, "text"); t.textContent = text; t.setAttribute("x", x); t.setAttribute("y", y);
    t.setAttribute("font-size", "10"); svg.appendChild(t);
  }
  for (const s of series) {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", s.points.map((p) => X(p[0]) + "," + Y(p[1])).join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", s.color); line.setAttribute("stroke-width", "2");
    line.setAttribute("class", "series"); line.dataset.points = s.points.length; svg.appendChild(line);
  }
}

function route() {
  clearInterval(timer); if (streamAbort) streamAbort.abort();
  for (const id of ["login", "list", "job"]) $(id).hidden = true;
  $("logout").hidden = !token();
  if (!token()) { $("login").hidden = false; return; }
  const m = location.hash.match(/^#job=([\w.\-]+)$/);
  if (m) showJob(m[1]); else showList();
}

async function refreshList() {
  const q = new URLSearchParams(); if ($("state-filter").value) q.append("state", $("state-filter").value);
  if ($("label-filter").value.includes("=")) q.append("label", $("label-filter").value.trim());
  const page = await api("/v1/jobs?" + q);
  const body = $("jobs"); body.replaceChildren();
  for (const job of page.jobs) {
    const row = el("tr"); row.dataset.job = job.id;
    const link = el("a", job.id); link.href = "#job=" + job.id; const c = el("td"); c.appendChild(link); row.appendChild(c);
    row.appendChild(el("td", job.kind)); row.appendChild(el("td", job.tenant || "default"));
    row.appendChild(el("td", job.state, "state " + job.state));
    const p = el("td", undefined, "progress"); p.appendChild(bar(job.progress)); p.appendChild(el("span", " " + ((job.progress || {}).step || 0) + "/" + ((job.progress || {}).total_steps || 0))); row.appendChild(p);
    const l = el("td"); for (const [k, v] of Object.entries(job.labels || {})) l.appendChild(el("span", k + "=" + v, "label")); row.appendChild(l);
    row.appendChild(el("td", age(job.create_time))); body.appendChild(row);
  }
}

function showList() { $("list").hidden = false; refreshList().catch(() => {}); timer = setInterval(() => refreshList().catch(() => {}), 2000); }

async function showJob(id) {
  $("job").hidden = false; $("job-title").textContent = id;
  const train = [], evals = [], lr = [], tps = [], events = $("events"); events.replaceChildren();
  const draw = () => { chart($("loss-chart"), [{points: train, color: "#2563eb"}, {points: evals, color: "#dc2626"}]);
    chart($("lr-chart"), [{points: lr, color: "#7c3aed"}]); chart($("tps-chart"), [{points: tps, color: "#059669"}]); };
  $("cancel").onclick = () => api("/v1/jobs/" + id + ":cancel", {method: "POST"}).then(refresh).catch((e) => alert(e.message));
  async function refresh() {
    const job = await api("/v1/jobs/" + id), p = job.progress || {};
    $("job-state").textContent = job.state; $("job-state").className = "state " + job.state; $("job-reason").textContent = job.state_reason;
    $("job-bar").style.width = (p.total_steps ? Math.min(100, 100 * p.step / p.total_steps) : 0) + "%";
    $("job-stats").textContent = `step ${p.step || 0}/${p.total_steps || 0} · train loss ${(p.train_loss || 0).toFixed(4)}` +
      (p.eval_loss != null ? ` · eval loss ${p.eval_loss.toFixed(4)}` : "") + ` · ${Math.round(p.tokens_per_second || 0)} tokens/s`;
    $("cancel").disabled = ["SUCCEEDED", "FAILED", "CANCELLED", "CANCELLING"].includes(job.state);
    const ck = await api("/v1/jobs/" + id + "/checkpoints"); $("checkpoints").replaceChildren();
    for (const c of ck.checkpoints) { const r = el("tr", undefined, c.is_best ? "best" : "");
      r.appendChild(el("td", c.step + (c.is_best ? " ★ best" : ""))); r.appendChild(el("td", JSON.stringify(c.metrics))); r.appendChild(el("td", c.uri)); $("checkpoints").appendChild(r); }
    if (job.kind === "TUNE") {
      $("trials-box").hidden = false; const t = await api("/v1/jobs/" + id + "/trials"); $("trials").replaceChildren();
      for (const trial of t.trials) { const r = el("tr"); r.appendChild(el("td", trial.id)); r.appendChild(el("td", trial.status));
        r.appendChild(el("td", JSON.stringify(trial.config))); r.appendChild(el("td", trial.eval_loss == null ? "" : trial.eval_loss.toFixed(4)));
        const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg"); svg.setAttribute("width", "200"); svg.setAttribute("height", "60");
        chart(svg, [{points: trial.curve.filter((q) => q.train_loss !== undefined).map((q) => [q.step, q.train_loss]), color: "#2563eb"}]);
        const c = el("td"); c.appendChild(svg); r.appendChild(c); $("trials").appendChild(r); }
    }
    api("/v1/jobs/" + id + "/logs?tail_lines=40").then((l) => { $("log").textContent = l.text; }).catch(() => {});
  }
  function take(e) {
    const d = e.data || {};
    if (e.type === "metrics") { train.push([d.step, d.train_loss]); if (d.lr !== undefined) lr.push([d.step, d.lr]); if (d.tokens_per_s !== undefined) tps.push([d.step, d.tokens_per_s]); }
    if (e.type === "eval" && d.eval_loss !== undefined) evals.push([d.step, d.eval_loss]);
    const r = el("tr"); r.appendChild(el("td", String(e.sequence))); r.appendChild(el("td", e.level)); r.appendChild(el("td", e.type)); r.appendChild(el("td", e.message));
    events.prepend(r); while (events.children.length > 200) events.lastChild.remove();
  }
  // Events: read the SSE stream with fetch; reconnect after `end` (max stream time) until the job is terminal.
  streamAbort = new AbortController(); let after = 0;
  (async () => {
    while (!streamAbort.signal.aborted) {
      const response = await fetch(`/v1/jobs/${id}/events:watch?after=${after}`, {headers: {Authorization: "Bearer " + token()}, signal: streamAbort.signal});
      if (!response.ok) return;
      const reader = response.body.getReader(), decoder = new TextDecoder(); let buffer = "", ended = null;
      for (;;) {
        const {value, done} = await reader.read(); if (done) break;
        buffer += decoder.decode(value, {stream: true}); let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          const type = (block.split("\n").find((l) => l.startsWith("event: ")) || "").slice(7);
          if (!data) continue;
          if (type === "end") { ended = JSON.parse(data).reason; continue; }
          const e = JSON.parse(data); after = e.sequence; take(e); draw();
        }
      }
      refresh().catch(() => {});
      if (ended !== "max_stream_s") return;
    }
  })().catch(() => {});
  await refresh().catch(() => {}); timer = setInterval(() => refresh().catch(() => {}), 3000);
}

for (const s of STATES) { const o = el("option", s); o.value = s; $("state-filter").appendChild(o); }
$("state-filter").onchange = () => refreshList().catch(() => {}); $("label-filter").onchange = $("state-filter").onchange;
$("login").onsubmit = async (ev) => {
  ev.preventDefault(); sessionStorage.setItem("raysftToken", $("token").value.trim());
  try { await api("/v1/jobs?page_size=1"); $("login-error").textContent = ""; route(); }
  catch (e) { sessionStorage.removeItem("raysftToken"); $("login-error").textContent = "that token was refused"; $("login").hidden = false; }
};
$("logout").onclick = () => { sessionStorage.removeItem("raysftToken"); location.hash = ""; route(); };
window.addEventListener("hashchange", route);
route();
