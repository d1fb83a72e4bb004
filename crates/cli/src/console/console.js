// Hookline console: refreshes the counts, runs a replay as the operator
// confirms it, and follows its progress. No framework, no build step.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

function form() {
  return new URLSearchParams(new FormData(document.getElementById("replay-form")));
}

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: { "x-csrf-token": csrf(), "content-type": "application/x-www-form-urlencoded" },
    body,
    credentials: "same-origin",
  });
  if (!r.ok) throw new Error(await r.text());
  return r.json();
}

function set(id, text) {
  const el = document.getElementById(id);
  if (el) el.textContent = text;
}

async function refresh() {
  try {
    const r = await fetch("/api/summary", { credentials: "same-origin" });
    if (!r.ok) return;
    const o = await r.json();
    set("waiting", o.waiting);
    set("in-flight", o.in_flight);
    set("dead-lettered", o.dead_lettered);
    set("oldest", o.oldest_dead_age);
    // Groups that emptied disappear; new ones show on the next reload.
    // While a replay runs the groups are not read (counts only).
    if (!o.groups_current) return;
    const all = o.by_reason.concat(o.by_type, o.by_destination);
    const keys = new Set(all.map((g) => g.key));
    for (const el of document.querySelectorAll("details.group")) {
      if (!keys.has(el.dataset.key)) el.remove();
    }
    for (const g of all) {
      for (const el of document.querySelectorAll("details.group")) {
        if (el.dataset.key === g.key) {
          const c = el.querySelector(".count");
          if (c) c.textContent = g.count;
        }
      }
    }
  } catch (_) {
    // The next tick tries again.
  }
}

async function follow() {
  const r = await fetch("/replay/status", { credentials: "same-origin" });
  if (!r.ok) return;
  const j = await r.json();
  const bar = document.getElementById("progress-bar");
  document.getElementById("progress").hidden = !j.started;
  bar.max = Math.max(j.planned, 1);
  bar.value = j.replayed;
  set(
    "progress-text",
    j.error ?? `${j.running ? "replaying" : "done"}: replayed ${j.replayed}, skipped ${j.skipped}, failed ${j.failed}`
  );
  if (j.running) setTimeout(follow, 300);
}

document.addEventListener("DOMContentLoaded", () => {
  const preview = document.getElementById("preview");
  if (!preview) return;
  let pending = null;
  preview.addEventListener("click", async () => {
    try {
      pending = form();
      const s = await post("/replay/preview", pending.toString());
      set("confirm-text", `Dry run: ${s.replayed} messages would be replayed (${s.skipped} do not match).`);
      document.getElementById("confirm").hidden = false;
    } catch (e) {
      set("confirm-text", "Dry run failed: " + e.message);
      document.getElementById("confirm").hidden = false;
    }
  });
  document.getElementById("confirm-replay").addEventListener("click", async () => {
    if (!pending) return;
    document.getElementById("confirm").hidden = true;
    try {
      await post("/replay", pending.toString());
    } catch (e) {
      set("progress-text", "Replay refused: " + e.message);
    }
    document.getElementById("progress").hidden = false;
    follow();
  });
  document.getElementById("cancel-replay").addEventListener("click", () => {
    pending = null;
    document.getElementById("confirm").hidden = true;
  });
  document.getElementById("export").addEventListener("click", () => {
    window.location.href = "/export?" + form().toString();
  });
  setInterval(refresh, 3000);
  follow();
});
