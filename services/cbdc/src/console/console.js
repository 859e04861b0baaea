"use strict";
// Reads /api/state every second and shows it. Every value is set as text, never as markup.
const fmt = (n, d = 2) => Number(n).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
const yuan = (s) => "¥" + fmt(Number(s));
function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}
function age(s) {
  if (s === null || s === undefined) return "none yet";
  return s < 60 ? fmt(s, 1) + " s" : fmt(s / 60, 1) + " min";
}
function drawRate(history) {
  const pts = [];
  for (let i = 1; i < history.length; i++) {
    const dt = (history[i].at_ms - history[i - 1].at_ms) / 1000;
    pts.push(dt > 0 ? Math.max(0, (history[i].log_entries - history[i - 1].log_entries) / dt) : 0);
  }
  const max = Math.max(1, ...pts);
  const line = pts.map((v, i) => `${(i * 600) / Math.max(1, pts.length - 1)},${115 - (v / max) * 110}`).join(" ");
  document.getElementById("rate-line").setAttribute("points", line);
  document.getElementById("rate-now").textContent =
    pts.length ? `now ${fmt(pts[pts.length - 1], 1)}/s, peak ${fmt(max, 1)}/s` : "";
}
async function refresh() {
  try {
    const r = await fetch("/api/state", { cache: "no-store" });
    if (r.status === 401) { location.reload(); return; }
    const s = await r.json();
    const err = document.getElementById("error");
    err.hidden = !s.error;
    err.textContent = s.error || "";
    if (s.issued !== undefined) {
      document.getElementById("issued").textContent = yuan(s.issued);
      document.getElementById("redeemed").textContent = yuan(s.redeemed);
      document.getElementById("outstanding").textContent = yuan(s.outstanding);
      const audit = document.getElementById("audit");
      audit.textContent = s.balanced ? "Balanced ✓" : "NOT balanced";
      audit.dataset.balanced = String(s.balanced);
      const body = document.querySelector("#ledgers tbody");
      body.replaceChildren(...s.ledgers.map((l) => {
        const tr = document.createElement("tr");
        tr.dataset.ledger = String(l.ledger);
        tr.append(
          cell("Bank " + l.ledger), cell(yuan(l.books), "books"), cell(yuan(l.reported), "reported"),
          cell(yuan(l.in_flight), "in-flight"), cell(l.balanced ? "yes" : "NO" + (l.fault ? ": " + l.fault : ""), "balanced"),
          cell(age(l.checkpoint_age_s), "age"), cell(fmt(l.transfers_per_s, 1), "tps"),
          cell(fmt(l.in_per_s), "in"), cell(fmt(l.out_per_s), "out"));
        tr.dataset.books = l.books;
        tr.dataset.checkpointSize = String(l.checkpoint_size);
        return tr;
      }));
      drawRate(s.history || []);
      document.getElementById("updated").textContent = "audited " + new Date(s.at_ms).toLocaleTimeString();
    }
  } catch (e) {
    document.getElementById("error").hidden = false;
    document.getElementById("error").textContent = "The console is not answering.";
  }
  setTimeout(refresh, 1000);
}
document.addEventListener("DOMContentLoaded", refresh);
