// The sessions dashboard redraws its rows in place: every few seconds it asks the page's
// JSON (?format=json, the same rows the server drew) and replaces only the rows that
// changed, so the page never reloads, keeps its scroll, and a button in use stays put.
(function () {
  "use strict";
  const activeBody = document.getElementById("active-rows");
  if (!activeBody) return;
  const $ = (id) => document.getElementById(id);
  const INTERVAL = 5000;
  const state = {
    active: JSON.parse($("dashboard-active").textContent),
    recent: JSON.parse($("dashboard-recent").textContent),
  };
  let failures = 0;

  function slot(row, name) { return row.querySelector(`[data-slot="${name}"]`); }

  function actionNode(action) {
    if (action.kind === "stop") {
      const form = $("stop-form-template").content.firstElementChild.cloneNode(true);
      form.action = action.url;
      return form;
    }
    const link = document.createElement("a");
    link.href = action.url;  // "Open" stays in this tab, as a launch does
    link.setAttribute("role", "button");
    link.className = action.kind === "open" ? "small" : "small secondary outline";
    link.dataset.action = action.kind;
    link.textContent = action.label;
    return link;
  }

  function activeRow(s) {
    const row = $("active-row-template").content.firstElementChild.cloneNode(true);
    row.dataset.session = s.id;
    const name = slot(row, "name");
    name.textContent = s.name;
    name.title = s.name_full;
    name.href = s.page;
    slot(row, "team").textContent = s.team;
    slot(row, "team").hidden = !s.team;
    slot(row, "id").textContent = s.id;
    slot(row, "started").textContent = s.started;
    slot(row, "urlpath").textContent = s.urlpath;
    slot(row, "urlpath-wrap").hidden = !s.urlpath;
    const status = slot(row, "status");
    status.className = "badge badge-" + s.status;
    status.textContent = s.status_label;
    slot(row, "idle").textContent = s.idle;
    slot(row, "memory").textContent = s.memory;
    const actions = slot(row, "actions");
    actions.replaceChildren(...s.actions.map(actionNode));
    if (!s.actions.length) {
      const note = document.createElement("span");
      note.className = "muted";
      note.textContent = "Stopping…";
      actions.append(note);
    }
    return row;
  }

  function recentRow(s) {
    const row = $("recent-row-template").content.firstElementChild.cloneNode(true);
    row.dataset.session = s.id;
    slot(row, "name").textContent = s.name;
    slot(row, "name").title = s.name_full;
    slot(row, "id").textContent = s.id;
    const status = slot(row, "status");
    status.className = "badge badge-" + s.status;
    status.textContent = s.status_label;
    const error = slot(row, "error_message");
    error.textContent = s.error_message.length > 140 ? s.error_message.slice(0, 139) + "…" : s.error_message;
    error.hidden = !s.error_message;
    slot(row, "started").textContent = s.started;
    slot(row, "ended").textContent = s.ended || "—";
    const again = slot(row, "relaunch");
    again.href = s.relaunch;
    again.textContent = s.relaunch_label;
    return row;
  }

  // What changes by itself between polls (the memory reading, "3 min" idle, "started 2
  // minutes ago"): a row whose only changes are these keeps its element (and a focused
  // button) and gets the new text in place; any other change redraws the row.
  const TEXTS = { memory: (s) => s.memory, idle: (s) => s.idle, started: (s) => s.started,
                  ended: (s) => s.ended || "—" };
  function shape(s) {
    return JSON.stringify({ ...s, memory: null, memory_used_bytes: null, idle: null, started: null, ended: null });
  }
  function retext(row, s) {
    for (const [name, text] of Object.entries(TEXTS)) {
      const node = slot(row, name);
      if (node && node.textContent !== text(s)) node.textContent = text(s);
    }
  }

  // Replace the rows of ``body`` that differ from ``rows`` (by id and content), in order.
  function redraw(body, before, rows, make) {
    const old = new Map(before.map((s) => [String(s.id), shape(s)]));
    const existing = new Map([...body.children].map((tr) => [tr.dataset.session, tr]));
    const wanted = rows.map((s) => {
      const id = String(s.id);
      const kept = existing.get(id);
      if (!kept || old.get(id) !== shape(s)) return make(s);
      retext(kept, s);
      return kept;
    });
    wanted.forEach((tr, i) => { if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null); });
    while (body.children.length > wanted.length) body.lastElementChild.remove();
  }

  function apply(data) {
    redraw(activeBody, state.active, data.active, activeRow);
    redraw($("recent-rows"), state.recent, data.recent, recentRow);
    state.active = data.active;
    state.recent = data.recent;
    $("active-sessions").hidden = !data.active.length;
    $("no-active").hidden = Boolean(data.active.length);
    $("recent-section").hidden = !data.recent.length;
  }

  async function poll() {
    if (!document.hidden) {
      try {
        const response = await fetch("?format=json", { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (response.redirected || !response.ok) throw new Error(String(response.status));
        apply(await response.json());
        failures = 0;
      } catch (e) {
        failures = Math.min(failures + 1, 6);  // back off while the portal is away
      }
    }
    setTimeout(poll, INTERVAL * (1 + failures));
  }
  setTimeout(poll, INTERVAL);
  document.addEventListener("visibilitychange", () => { if (!document.hidden && failures) { failures = 0; } });
})();
