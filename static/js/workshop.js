// The instructor's workshop page: follow /ws/workshops/<id>/ and redraw the roster and the
// workshop's summary (status, seats, warm pool, code) from each message. Rows are drawn
// from the <template id="roster-row-template"> (the same markup the server draws,
// templates/workshops/_roster_row.html); data comes from json_script blocks only.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const config = $("roster-config");
  if (!config) return;
  const { workshopId } = JSON.parse(config.textContent);
  const rows = $("roster-rows");
  const template = $("roster-row-template");
  const live = $("roster-live");

  function setText(id, value) {
    const el = $(id);
    if (el && el.textContent !== String(value)) el.textContent = value;
  }

  function drawRow(r) {
    const tr = template.content.firstElementChild.cloneNode(true);
    tr.dataset.seat = r.id;
    const slot = (name) => tr.querySelector('[data-slot="' + name + '"]');
    slot("name").textContent = r.name;
    const who = slot("who");
    if (r.guest) {
      const span = document.createElement("span");
      span.className = "muted"; span.textContent = "guest";
      who.replaceChildren(span);
    } else {
      who.textContent = r.who;
    }
    const time = document.createElement("time");
    time.dateTime = r.joined_at; time.textContent = r.joined;
    slot("joined").replaceChildren(time);
    const badge = document.createElement("span");
    badge.className = "badge badge-" + r.status;
    badge.textContent = r.status_label;
    if (r.error_message) badge.title = r.error_message;
    slot("status").replaceChildren(badge);
    slot("last_activity").textContent = r.last_activity_label;
    slot("memory").textContent = r.memory;
    slot("time_left").textContent = r.time_left || "—";
    const files = tr.querySelector('[data-part="files"]');
    if (r.files_url) files.href = r.files_url; else files.remove();
    const stop = tr.querySelector('[data-part="stop"]');
    if (r.can_stop) {
      stop.action = r.stop_url;
      stop.dataset.confirm = "Stop " + r.name + "'s session? Their unsaved work is lost.";
    } else stop.remove();
    const restart = tr.querySelector('[data-part="restart"]');
    if (r.can_restart) {
      restart.action = r.restart_url;
      restart.dataset.confirm = "Restart " + r.name + "'s session with a fresh server? Their unsaved work is lost.";
    } else restart.remove();
    return tr;
  }

  function drawSummary(w) {
    const badge = $("workshop-status");
    if (badge) {
      badge.className = "badge badge-" + w.status;
      setText("workshop-status", w.status_label);
    }
    setText("seats-taken", w.seats_taken);
    setText("seats-total", w.seats);
    setText("warm-ready", w.warm.ready);
    setText("warm-starting", w.warm.starting);
    const code = $("join-code");
    if (code && code.textContent !== w.code) {  // rotated (in another tab): a new link
      code.textContent = w.code;
      const url = $("join-url");
      url.value = url.value.replace(/\/w\/[^/?#]+$/, w.join_path);
      const qr = $("qr-image");
      if (qr) qr.src = qr.src.replace(/\?.*$/, "") + "?c=" + encodeURIComponent(w.code);
    }
  }

  function draw(message) {
    drawSummary(message.workshop);
    // a row being pressed keeps its form: redraw only when nothing in the table has focus
    if (rows.contains(document.activeElement)) return;
    rows.replaceChildren(...message.rows.map(drawRow));
    $("roster-empty").hidden = message.rows.length > 0;
  }

  let retry = 500;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/workshops/" + workshopId + "/");
    socket.onopen = () => { live.textContent = "· live"; retry = 500; };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.kind === "roster") draw(message);
    };
    socket.onclose = (close) => {
      if (close.code === 4404) { live.textContent = "· not live"; return; }
      live.textContent = "· reconnecting…";
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }
  connect();
})();
