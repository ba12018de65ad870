// The build page: follow the build's websocket into the terminal, the phase bar and the
// status badge. Its data comes from a json_script block, never from inline script.
(function () {
  "use strict";
  const data = document.getElementById("build-status-data");
  const log = document.getElementById("log");
  if (!data || !log) return;
  let initial = JSON.parse(data.textContent);
  if (typeof initial === "string") initial = JSON.parse(initial);  // the view sends it as JSON text
  const bar = document.getElementById("phase-bar");
  const badge = document.getElementById("build-status");
  const error = document.getElementById("build-error");
  const count = document.getElementById("log-count");
  const hadReceipt = log.dataset.hadReceipt === "true";
  BinderyLog.setPhase(bar, initial.phase, initial.status === "failed");
  BinderyLog.attach(log, {
    url: "/ws/builds/" + encodeURIComponent(log.dataset.buildId) + "/",
    onStatus(event) {
      BinderyLog.setPhase(bar, event.phase, event.status === "failed");
      badge.textContent = event.status;
      badge.className = "badge badge-" + event.status;
      if (event.error_message) { error.hidden = false; error.textContent = event.error_message; }
      if (event.status === "ready" && !hadReceipt) setTimeout(() => location.reload(), 600);
      if (["ready", "failed", "cancelled"].includes(event.status)) {
        const form = document.getElementById("cancel-form"); if (form) form.remove();
      }
    },
    onEvent(event) { if (event.kind === "log" && event.lines.length) count.textContent = event.lines[event.lines.length - 1].n; },
  });
})();
