// The console's only script: listen to /console/events (server-sent events) and, when an event
// says a part changed, fetch that part's server-rendered HTML once. No polling, no framework.
"use strict";
(function () {
  const TAIL_MAX = 200;
  // An action's answer is rendered at its POST address; show /console/ instead, so that a
  // reload fetches the page rather than repeating the action.
  if (window.location.pathname !== "/console/") history.replaceState(null, "", "/console/");
  const pending = new Set();
  let timer = null;

  // A form that asks first says so in data-confirm: text in an attribute, escaped as HTML, never
  // spliced into inline script (where HTML escaping is the wrong context).
  document.addEventListener("submit", function (event) {
    const question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });

  function refresh(part) {
    pending.add(part);
    if (timer) return;
    // Coalesce a burst (a publish changes several tools at once) into one fetch per part.
    timer = setTimeout(async function () {
      const parts = Array.from(pending);
      pending.clear();
      timer = null;
      for (const name of parts) {
        const query = name === "packages" ? window.location.search : "";
        const response = await fetch("/console/part/" + name + query, { credentials: "same-origin" });
        if (response.ok) document.getElementById(name).innerHTML = await response.text();
      }
    }, 150);
  }

  function tail(event) {
    const item = JSON.parse(event.data);
    const row = document.createElement("li");
    const when = new Date(item.at * 1000).toISOString().slice(11, 19);
    const body = item.body || {};
    const who = body.principal || body.subject || "";
    const what = body.action ? body.action + " " + body.target + " (" + body.outcome + ")" :
      body.tool ? body.tool + (body.outcome ? " " + body.outcome : "") + (body.status && !body.reason ? " " + body.status : "") :
      body.name ? body.name + " " + (body.version || "") : "";
    row.textContent = when + "  " + item.subject + "  " + who + "  " + what;  // text, never HTML
    row.dataset.subject = item.subject;
    if (item.subject.indexOf("audit.auth.") === 0 || body.outcome === "refused") row.className = "refused";
    const list = document.getElementById("audit-tail");
    list.insertBefore(row, list.firstChild);
    while (list.children.length > TAIL_MAX) list.removeChild(list.lastChild);
  }

  function stats(event) {
    const rows = JSON.parse(event.data).tools;
    const body = document.getElementById("stats-rows");
    if (!rows.length) return;
    body.replaceChildren(...rows.map(function (s) {
      const tr = document.createElement("tr");
      for (const value of [s.tool, s.calls, s.errors, s.perS.toFixed(2), s.meanMs.toFixed(1) + " ms"]) {
        const td = document.createElement("td");
        td.textContent = String(value);
        tr.appendChild(td);
      }
      return tr;
    }));
  }

  const source = new EventSource("/console/events");
  const live = document.getElementById("live");
  source.onopen = function () {
    // What changed between rendering the page and opening the stream (or while it reconnected)
    // came as no event: fetch each part once, then follow the events.
    for (const part of ["tools", "packages", "workers", "tasks"]) refresh(part);
    live.classList.add("on");
  };
  source.onerror = function () { live.classList.remove("on"); };
  source.addEventListener("catalogue", function () { refresh("tools"); refresh("packages"); });
  source.addEventListener("workers", function () { refresh("workers"); });
  source.addEventListener("tasks", function () { refresh("tasks"); });
  source.addEventListener("audit", function (event) {
    tail(event);
    if (event.data.indexOf('"subject": "events.') >= 0) refresh("packages");
  });
  source.addEventListener("stats", stats);
})();
