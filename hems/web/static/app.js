// The page's script (served as a file: the CSP allows no inline script). The server renders
// the page; this only fetches each fragment again (its data-src: when a live event names it,
// else every data-every-s seconds) and swaps it in, and posts the forms as JSON with the session's CSRF token from
// <meta name="csrf-token">.
const CSRF = document.querySelector('meta[name="csrf-token"]').content;

async function reload(id) {
  const old = document.getElementById(id);
  if (!old) return;
  try {
    const r = await fetch(old.dataset.src, {cache: "no-store"});
    if (r.redirected || !r.ok) throw new Error(r.redirected ? "logged out" : "HTTP " + r.status);
    const t = document.createElement("template");
    t.innerHTML = await r.text();
    const fresh = t.content.firstElementChild;
    if (fresh && fresh.id === id) document.getElementById(id).replaceWith(fresh);
    document.getElementById("error").textContent = "";
    if (id === "frag-chargers") syncChargers();
  } catch (e) {
    document.getElementById("error").textContent = "Cannot reach the daemon: " + e.message;
  }
}

// The EV form's charger list follows the chargers table (a charger may connect later).
function syncChargers() {
  const ids = [...document.querySelectorAll("#chargers tr[data-charger]")].map(tr => tr.dataset.charger);
  for (const sel of document.querySelectorAll("#ev-charger, .charger-select")) {
    if ([...sel.options].map(o => o.value).join() === ids.join()) continue;
    const chosen = sel.value;
    sel.replaceChildren(...ids.map(id => new Option(id, id, false, id === chosen)));
  }
  if (ids.length) document.getElementById("chargers-section").hidden = false;
}

// Live events (GET /api/v1/stream, server-sent): each kind names the fragments it refreshes.
// While the stream is open the live fragment follows it alone; polling stays as the fallback
// (stream down, or a fragment whose content also moves with time).
const ON_EVENT = {
  site: ["frag-live"],
  devices: ["frag-live", "frag-alerts"],
  plan: ["frag-plan"],
  intervention: ["frag-control", "frag-alerts"],
  flex: ["frag-flex"],
};
const STREAM_DRIVEN = new Set(["frag-live"]);
let streaming = false;
const inFlight = new Set();
async function refresh(id) {
  if (inFlight.has(id)) return;  // one fetch per fragment at a time
  inFlight.add(id);
  try { await reload(id); } finally { inFlight.delete(id); }
}
if (window.EventSource) {
  const stream = new EventSource("/api/v1/stream");
  stream.onopen = () => { streaming = true; document.body.dataset.stream = "open"; };
  stream.onerror = () => { streaming = false; document.body.dataset.stream = "down"; };
  for (const [kind, ids] of Object.entries(ON_EVENT)) {
    stream.addEventListener(kind, () => { for (const id of ids) refresh(id); });
  }
}

for (const frag of document.querySelectorAll(".frag[data-src]")) {
  const every = Number(frag.dataset.everyS) * 1000;
  setInterval(() => {
    if (!(streaming && STREAM_DRIVEN.has(frag.id))) refresh(frag.id);
  }, every);
}

const evForm = document.getElementById("ev-form");
evForm.addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = new FormData(evForm);
  const out = document.getElementById("ev-result");
  try {
    const r = await fetch("/api/ev-session", {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF},
      body: JSON.stringify(Object.fromEntries([...f].filter(([, v]) => v !== ""))),
    });
    if (r.status === 401) return keepAndLogIn("/api/ev-session", evForm);
    const body = await r.json();
    out.textContent = r.ok ? "saved" : body.error;
  } catch (e) {
    out.textContent = "Cannot reach the daemon: " + e.message;
  }
  reload("frag-chargers");
  reload("frag-alerts");
});

// Forms with class api-form post their fields as JSON to data-action, show the answer in
// their .result, and reload the fragments named in data-reload. Delegated from the document,
// so forms inside fragments that are swapped in keep working.
document.addEventListener("submit", async ev => {
  const form = ev.target.closest("form.api-form");
  if (!form) return;
  ev.preventDefault();
  const out = form.querySelector(".result") || form.parentElement.querySelector(".result");
  try {
    const r = await fetch(form.dataset.action, {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF},
      body: JSON.stringify(Object.fromEntries(new FormData(form))),
    });
    if (r.status === 401) return keepAndLogIn(form.dataset.action, form);
    const body = await r.json();
    if (out) out.textContent = r.ok ? "done" : body.error;
  } catch (e) {
    if (out) out.textContent = "Cannot reach the daemon: " + e.message;
  }
  for (const id of (form.dataset.reload || "").split(" ").filter(Boolean)) reload(id);
});

// A lost session (expired, logged out elsewhere): keep what was typed in this tab, log in,
// and put it back in the same form (not sent again until pressed).
const KEPT = "hems-kept-form";
function keepAndLogIn(action, form) {
  sessionStorage.setItem(KEPT, JSON.stringify({action, fields: Object.fromEntries(new FormData(form))}));
  location.href = "/login";
}
(function restoreKept() {
  const kept = JSON.parse(sessionStorage.getItem(KEPT) || "null");
  if (!kept) return;
  sessionStorage.removeItem(KEPT);
  const form = kept.action === "/api/ev-session" ? evForm
    : document.querySelector(`form.api-form[data-action="${CSS.escape(kept.action)}"]`);
  if (!form) return;
  for (const [name, value] of Object.entries(kept.fields)) {
    const input = form.elements.namedItem(name);
    if (input && input.type !== "hidden") input.value = value;
  }
  const out = form.querySelector(".result, #ev-result");
  if (out) out.textContent = "kept from before you logged in again: press to send";
})();
