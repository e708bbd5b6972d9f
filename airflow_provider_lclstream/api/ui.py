"""The transfers page: a table of transfers and a live throughput plot, plain HTML + JS.

It polls the JSON API next to it (``../v1/transfers``) with the browser's own credentials
(Airflow's session cookie inside the API server; the client certificate standalone), so the
page itself holds no data. ``?id=RUN_ID`` selects a transfer (the DAG-run tab links so). Below,
the caller's subscriptions and the count of run starts that no subscription matched, then the
warm pools of streamers and buffers (``../v1/warm-pools``): standby jobs ready, claims,
fallbacks, dead jobs.
"""

from __future__ import annotations

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>LCLStream transfers</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;margin:1rem;color:#1a202c;background:#fff}
 h1{font-size:1.3rem;margin:0 0 .5rem} h2{font-size:1.05rem;margin:1rem 0 .4rem}
 table{border-collapse:collapse;width:100%;font-size:.9rem}
 th,td{border-bottom:1px solid #e2e8f0;padding:.3rem .5rem;text-align:left}
 tr.sel{background:#ebf8ff} tr[data-id]{cursor:pointer}
 .state{font-weight:600} .ready,.completed{color:#2f855a} .failed{color:#c53030}
 .canceled,.canceling{color:#975a16} .provisioning,.queued{color:#2b6cb0}
 #summary span{margin-right:1.2rem} #status{color:#718096;font-size:.8rem}
 canvas{border:1px solid #e2e8f0;max-width:100%}
</style></head>
<body>
<h1>LCLStream transfers</h1>
<div id="status">loading…</div>
<table id="transfers"><thead><tr><th>id</th><th>label</th><th>user</th><th>state</th>
<th>created</th></tr></thead><tbody></tbody></table>
<h2>Transfer <span id="selected-id">–</span></h2>
<div id="summary"><span>state: <b id="selected-state" class="state">–</b></span>
<span>events: <b id="events">–</b></span><span>events/s: <b id="events-rate">–</b></span>
<span>MB/s: <b id="mbps">–</b></span><span>producers ended: <b id="producers">–</b></span>
<span>tasks: <span id="tasks">–</span></span>
<span>buffers: <span id="buffers">–</span></span></div>
<canvas id="plot" width="900" height="260"></canvas>
<h2>Subscriptions</h2>
<div id="unmatched-line">run starts no subscription matched: <b id="unmatched-count">–</b>
<span id="unmatched-latest"></span></div>
<table id="subscriptions"><thead><tr><th>id</th><th>owner</th><th>match</th><th>detector</th>
<th>consumer</th><th>enabled</th></tr></thead><tbody></tbody></table>
<h2>Warm pools</h2>
<table id="warm-pools"><thead><tr><th>pool</th><th>role</th><th>backend</th><th>ranks</th>
<th>ready</th><th>claimed</th><th>fallbacks</th><th>dead</th><th>expired</th>
<th>latest event</th></tr></thead>
<tbody></tbody></table>
<script>
"use strict";
const base = location.pathname.replace(/\\/ui\\/?$/, "");
const params = new URLSearchParams(location.search);
const interval = Math.max(250, Number(params.get("interval") || 1000));
let selected = params.get("id");
const series = {};  // id -> [{t, eps, mbps}]
const text = (id, v) => { document.getElementById(id).textContent = v; };
async function getJSON(path) {
  const r = await fetch(base + path, {credentials: "same-origin",
                                      headers: {"Accept": "application/json"}});
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}
function row(t) {
  const tr = document.createElement("tr");
  tr.dataset.id = t.id;
  if (t.id === selected) tr.className = "sel";
  const label = t.label + (t.subscription ? " (" + t.subscription + ")" : "");
  for (const v of [t.id, label, t.user, t.state, new Date(t.created).toLocaleString()]) {
    const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
  }
  tr.children[3].className = "state " + t.state;
  tr.onclick = () => { selected = t.id; history.replaceState(null, "", "?id=" + t.id); tick(); };
  return tr;
}
function draw(points) {
  const c = document.getElementById("plot"), g = c.getContext("2d");
  const W = c.width, H = c.height, L = 60, R = 60, T = 20, B = 30;
  g.clearRect(0, 0, W, H); g.font = "12px sans-serif";
  g.strokeStyle = "#a0aec0"; g.strokeRect(L, T, W - L - R, H - T - B);
  if (!points.length) { g.fillText("no data yet", W / 2 - 30, H / 2); return; }
  const t0 = points[0].t, t1 = Math.max(points[points.length - 1].t, t0 + 1);
  const x = t => L + (t - t0) / (t1 - t0) * (W - L - R);
  const line = (key, color, yMax, label, right) => {
    g.strokeStyle = color; g.fillStyle = color; g.beginPath();
    points.forEach((p, i) => { const y = H - B - (p[key] || 0) / yMax * (H - T - B);
                               i ? g.lineTo(x(p.t), y) : g.moveTo(x(p.t), y); });
    g.stroke();
    g.fillText(label + " (axis to " + yMax.toFixed(1) + ")", right ? W - R - 160 : L + 5, T - 6);
  };
  const top = key => 1.2 * Math.max(0.1, ...points.map(p => p[key] || 0));
  line("eps", "#3182ce", top("eps"), "events/s", false);
  line("mbps", "#dd6b20", top("mbps"), "MB/s", true);
  g.fillStyle = "#718096"; g.fillText(((t1 - t0) / 1000).toFixed(0) + " s", W - R - 20, H - 8);
}
async function tick() {
  try {
    const list = await getJSON("/v1/transfers?limit=50");
    const body = document.querySelector("#transfers tbody");
    body.replaceChildren(...list.data.map(row));
    if (!selected) {
      const active = list.data.find(t => ["ready", "provisioning", "queued"].includes(t.state));
      selected = (active || list.data[0] || {}).id || null;
    }
    if (selected) {
      const d = await getJSON("/v1/transfers/" + encodeURIComponent(selected));
      text("selected-id", d.id); text("selected-state", d.state);
      document.getElementById("selected-state").className = "state " + d.state;
      text("tasks", Object.entries(d.tasks).map(([k, v]) => k + "=" + (v || "none")).join(", "));
      const m = d.metrics, f = d.final;
      if (m && !m.error) {
        const pts = series[d.id] = series[d.id] || [];
        pts.push({t: Date.now(), eps: m.events_per_s || 0, mbps: m.mb_per_s || 0});
        if (pts.length > 300) pts.shift();
        text("events", m.events ?? m.messages_in + " msgs");
        text("events-rate", m.events_per_s ?? "–"); text("mbps", m.mb_per_s.toFixed(2));
        text("producers", m.producers_ended + "/" + (m.producers_expected ?? "?"));
      } else if (f) {
        const lost = f.produced === undefined ? null
          : f.delivered + " of " + f.produced + ", " + (f.missing ?? "?") + " missing";
        text("events", f.events ?? lost ?? "–"); text("mbps", (f.mb_per_s ?? 0).toFixed(2));
      }
      const each = (d.buffers || []).map(b => "#" + b.index + " " + (b.metrics && !b.metrics.error
        ? b.metrics.producers_ended + "/" + (b.metrics.producers_expected ?? "?") + " ended, "
          + b.metrics.mb_per_s.toFixed(2) + " MB/s" : (b.url || "–")));
      const done = ((f && f.buffers) || []).map((b, i) => "#" + i + " " + b.events + " events");
      text("buffers", (each.length ? each : done).join("; ") || "1");
      draw(series[d.id] || []);
    }
    text("status", "updated " + new Date().toLocaleTimeString());
  } catch (err) {
    text("status", "error: " + err.message);
  }
}
function matchText(m) {
  let t = m.experiment || (m.instrument + (m.pattern ? " ~ " + m.pattern : " (all)"));
  if (m.run_types && m.run_types.length) t += " [" + m.run_types.join(",") + "]";
  return t;
}
async function subscriptions() {
  try {
    const subs = await getJSON("/v1/subscriptions?all_users=true");
    const body = document.querySelector("#subscriptions tbody");
    body.replaceChildren(...subs.data.map(s => {
      const tr = document.createElement("tr"); tr.dataset.sub = s.id;
      const consumer = s.template.consumer_template || "lclstream-receive";
      for (const v of [s.id, s.owner, matchText(s.match), s.template.detector_name || "epix10k2M",
                       consumer, s.enabled ? "yes" : "no"]) {
        const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
      }
      return tr;
    }));
    const un = await getJSON("/v1/subscriptions/unmatched?limit=5");
    text("unmatched-count", un.count);
    text("unmatched-latest", un.data.length ? "(latest: " + un.data.map(
      e => e.experiment + " r" + e.run).join(", ") + ")" : "");
  } catch (err) {
    text("unmatched-count", "error: " + err.message);
  }
}
async function warmPools() {
  try {
    const pools = await getJSON("/v1/warm-pools");
    const body = document.querySelector("#warm-pools tbody");
    body.replaceChildren(...pools.data.map(p => {
      const tr = document.createElement("tr"); tr.dataset.pool = p.name;
      const c = p.counters, spec = p.spec;
      const role = spec.role || "streamer";
      for (const v of [p.name, role, spec.conn_id || "local",
                       role === "streamer" ? spec.ranks : "–",
                       p.ready + "/" + spec.size, c.claimed, c.fallbacks, c.dead, c.expired,
                       p.events.length ? p.events[p.events.length - 1] : "–"]) {
        const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
      }
      return tr;
    }));
  } catch (err) {
    document.querySelector("#warm-pools tbody").textContent = "error: " + err.message;
  }
}
tick(); setInterval(tick, interval);
subscriptions(); setInterval(subscriptions, Math.max(interval, 5000));
warmPools(); setInterval(warmPools, Math.max(interval, 5000));
</script></body></html>
"""


def ui_page() -> str:
    """The page's HTML (static: it reads everything from the API)."""
    return _PAGE
