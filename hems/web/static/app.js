// The page's script (served as a file: the CSP allows no inline script). State-changing
// requests carry the session's CSRF token from the page's <meta name="csrf-token">.
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const fmtW = v => v === null || v === undefined ? "–" : (Math.abs(v) >= 1000 ? (v/1000).toFixed(2) + " kW" : Math.round(v) + " W");
// One card per site quantity (rendered by the server from the table); format by its unit.
const fmtUnit = (v, unit, precision) => unit === "W" ? fmtW(v) :
  (v === null || v === undefined ? "–" : v.toFixed(precision) + " " + unit);
function esc(s) { return String(s).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c])); }
async function refresh() {
  try {
    const r = await fetch("/api/state", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const s = await r.json();
    document.getElementById("error").textContent = "";
    document.getElementById("site").textContent = s.site ? "· " + s.site : "";
    document.getElementById("now").textContent = new Date(s.now).toLocaleString();
    for (const el of document.querySelectorAll(".cards .value[data-unit]"))
      el.textContent = fmtUnit(s.summary[el.id], el.dataset.unit, Number(el.dataset.precision));
    const dev = document.querySelector("#devices tbody");
    dev.innerHTML = Object.entries(s.devices).map(([id, d]) =>
      `<tr class="${d.stale ? "stale" : ""}"><td>${esc(id)}</td><td>${esc(d.role)}</td>` +
      `<td><span class="badge ${d.stale ? "stale" : "ok"}">${d.stale ? "stale" : "ok"}</span> ${esc(d.reason || "")}</td></tr>`).join("");
    const rd = document.querySelector("#readings tbody");
    rd.innerHTML = s.readings.map(x =>
      `<tr class="${x.stale ? "stale" : ""}" data-device="${esc(x.device_id)}" data-quantity="${esc(x.quantity)}">` +
      `<td>${esc(x.device_id)}</td><td>${esc(x.quantity)}</td><td class="num">${Number(x.value).toFixed(x.unit === "W" || x.unit === "Wh" ? 0 : 2)}</td>` +
      `<td>${esc(x.unit)}</td><td class="num">${x.age_s.toFixed(0)} s</td></tr>`).join("");
  } catch (e) {
    document.getElementById("error").textContent = "Cannot reach the daemon: " + e.message;
  }
}
async function optional(name) {
  const r = await fetch("/api/" + name, {cache: "no-store"});
  return r.ok ? r.json() : undefined;
}
const hhmm = iso => new Date(iso).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
async function refreshStages() {
  try {
    const st = await optional("stages");
    const failed = Object.entries((st && st.failures) || {});
    const banner = document.getElementById("stage-failures");
    banner.hidden = failed.length === 0;
    banner.innerHTML = failed.map(([name, f]) =>
      `<p data-stage="${esc(name)}">Stage ${esc(name)} failed ${f.failures}× (last: ${esc(f.last_error || "")})` +
      (f.restarting_in_s === null ? ", restarted" : `, restarting in ${f.restarting_in_s} s`) + "; control goes on</p>").join("");
    const plan = await optional("plan");
    document.getElementById("plan-section").hidden = plan === undefined;
    if (plan) {
      document.getElementById("plan-meta").textContent = `${plan.status}, cost ${plan.cost.toFixed(2)}, made ${hhmm(plan.created_at)}` + (plan.notes.length ? " · " + plan.notes.join("; ") : "");
      document.querySelector("#plan tbody").innerHTML = plan.slots.slice(0, 12).map(sl =>
        `<tr><td>${hhmm(sl.start)}</td><td class="num">${(sl.price_import_per_kwh * 100).toFixed(1)} p</td>` +
        `<td class="num">${fmtW(sl.grid_import_w - sl.grid_export_w)}</td>` +
        `<td>${esc(Object.entries(sl.targets_w).map(([d, w]) => d + " " + fmtW(w)).join(", "))}</td>` +
        `<td class="num">${esc(Object.values(sl.soc_pct).map(v => v.toFixed(0) + " %").join(", "))}</td></tr>`).join("");
    }
    const control = await optional("control");
    document.getElementById("control-section").hidden = control === undefined;
    if (control) {
      const h = document.getElementById("control-health");
      h.textContent = control.status.healthy ? "healthy" : "unhealthy";
      h.className = "badge " + (control.status.healthy ? "ok" : "stale");
      document.getElementById("control-meta").textContent = `${control.status.cycles} cycles, last ${control.status.last_cycle_ms} ms` + (control.flex ? ` · flex event ${control.flex.event_id}: ${control.flex.delivered_wh} Wh delivered` : "");
      document.querySelector("#interventions tbody").innerHTML = control.interventions.slice().reverse().map(i =>
        `<tr><td>${esc(i.at ? hhmm(i.at) : "")}</td><td>${esc(i.rule + " " + i.event)}</td><td>${esc(i.device_id || "")}</td><td>${esc(i.reason)}</td></tr>`).join("");
    }
    const ch = await optional("chargers");
    document.getElementById("chargers-section").hidden = ch === undefined;
    if (ch) {
      document.querySelector("#chargers tbody").innerHTML = Object.entries(ch.chargers).map(([id, c]) => {
        const s = ch.sessions[id];
        return `<tr data-charger="${esc(id)}"><td>${esc(id)}</td><td>${esc(c.state)}</td><td class="num">${c.limit_a === null ? "–" : c.limit_a + " A"}</td>` +
          `<td>${s ? esc((s.energy_wh / 1000).toFixed(1) + " kWh by " + hhmm(s.departure)) : ""}</td></tr>`;
      }).join("");
      const sel = document.getElementById("ev-charger");
      if (sel.options.length !== Object.keys(ch.chargers).length)
        sel.innerHTML = Object.keys(ch.chargers).map(id => `<option>${esc(id)}</option>`).join("");
    }
    const events = await optional("events");
    document.getElementById("flex-section").hidden = events === undefined;
    if (events !== undefined) await refreshFlex(control);
    const keys = await optional("keys");
    document.getElementById("keys-section").hidden = keys === undefined;
    if (keys) document.getElementById("gateway-key").textContent = keys.gateway_public_key;
  } catch (e) { /* the state refresh reports connectivity */ }
}
const fmtKwh = v => v === null || v === undefined ? "–" : v.toFixed(2);
function instruction(x) {
  const parts = [];
  if (x.import_cap_w !== null && x.import_cap_w !== undefined) parts.push("import ≤ " + fmtW(x.import_cap_w));
  if (x.export_floor_w !== null && x.export_floor_w !== undefined) parts.push("export ≥ " + fmtW(x.export_floor_w));
  if (x.setpoint_w !== null && x.setpoint_w !== undefined) parts.push("grid at " + fmtW(x.setpoint_w));
  if (x.price_per_kwh !== null && x.price_per_kwh !== undefined) parts.push("price " + x.price_per_kwh + " " + (x.currency || "") + "/kWh");
  return parts.join(", ");
}
async function refreshFlex(control) {
  const f = control && control.flex;
  const fe = await optional("flex-events");
  const ev = f && fe ? fe.events.find(e => e.event_id === f.event_id) : undefined;
  const when = !f ? "" : f.active ? (ev ? "in progress until " + hhmm(ev.end) : "in progress") :
    f.delivered_wh ? (ev ? "ended at " + hhmm(ev.end) : "ended") +
      (ev && ev.status === "reported" ? "; delivery report sent" : "; the report follows once the meter data are in") :
    (ev ? "starts at " + hhmm(ev.start) : "not started");
  document.getElementById("flex-live").textContent = !f ? "No flexibility event in progress." :
    `${f.event_id}: ${when} · baseline ${fmtW(f.baseline_w)}, ` +
    `${f.kind === "import-cap" ? "import cap" : "export floor"} ${fmtW(f.limit_w)}` +
    (f.active && f.delivered_w !== null ? `, delivering ${fmtW(f.delivered_w)} now` : "") +
    ` · ${(f.delivered_wh / 1000).toFixed(2)} kWh delivered so far` +
    (f.active ? ` (expected ${(f.expected_delivery_wh / 1000).toFixed(2)} kWh)` : "");
  if (fe) {
    document.querySelector("#flex-events tbody").innerHTML = fe.events.map(e => {
      const asked = instruction(e.requested), done = instruction(e.effective);
      const ok = e.status === "accepted" || e.status === "reported";
      return `<tr data-event="${esc(e.event_id)}"><td>${esc(e.event_id)}${e.modification_number ? " #" + e.modification_number : ""}</td>` +
        `<td>${hhmm(e.start)}–${hhmm(e.end)}</td><td>${esc(asked === done ? asked : asked + " → " + done)}</td>` +
        `<td><span class="badge ${ok ? "ok" : "stale"}">${esc(e.status.replace("_", " "))}</span></td><td>${esc(e.reasons.join("; "))}</td></tr>`;
    }).join("");
    document.getElementById("flex-rejected").innerHTML = fe.rejected.length ?
      "Refused messages from the aggregator channel: " + fe.rejected.slice().reverse().map(r =>
        `<span class="rejected"><b>${esc(r.reason)}</b> ${esc(r.detail)}</span>`).join("; ") : "";
  }
  const reports = await optional("reports");
  if (reports && reports.length) {
    document.getElementById("flex-reports").innerHTML = reports.map(r =>
      `<div class="report" data-event="${esc(r.event_id)}"><b>${esc(r.event_id)}</b> · ${esc(r.method)} ` +
      `(${r.days_used} baseline days) · delivered <b>${fmtKwh(r.total_delivered_kwh)} kWh</b>` +
      (r.load_shifting_suspected ? ' · <span class="badge stale">load shifting suspected</span>' : "") +
      `<div class="hint">meter data sha256 <code class="hash">${esc(r.meter_data_sha256)}</code></div>` +
      `<table><thead><tr><th>Period</th><th class="num">Baseline kWh</th><th class="num">Metered kWh</th><th class="num">Delivered kWh</th></tr></thead><tbody>` +
      r.periods.map(p => `<tr><td>${hhmm(p.period_start)}–${hhmm(p.period_end)}</td><td class="num">${fmtKwh(p.baseline_kwh)}</td>` +
        `<td class="num">${fmtKwh(p.metered_kwh)}</td><td class="num">${fmtKwh(p.delivered_kwh)}</td></tr>`).join("") +
      `</tbody></table></div>`).join("");
  }
}
document.getElementById("ev-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const r = await fetch("/api/ev-session", {method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF},
    body: JSON.stringify({charger_id: f.get("charger_id"), energy_kwh: f.get("energy_kwh"), departure: f.get("departure")})});
  const out = await r.json();
  document.getElementById("ev-result").textContent = r.ok ? "saved" : out.error;
  refreshStages();
});
async function refreshSecurity() {
  const r = await fetch("/api/security-log", {cache: "no-store"});
  if (!r.ok) return;
  const rows = await r.json();
  document.querySelector("#security-log tbody").innerHTML = rows.map(e =>
    `<tr><td>${esc(new Date(e.at).toLocaleString([], {hour12: false}))}</td><td>${esc(e.kind)}</td>` +
    `<td>${esc(e.client)}</td><td>${esc(e.detail)}</td></tr>`).join("");
}
refresh();
refreshStages();
refreshSecurity();
setInterval(refresh, 2000);
setInterval(refreshStages, 5000);
setInterval(refreshSecurity, 30000);
