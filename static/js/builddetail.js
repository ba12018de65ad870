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
  // a failed build's bar is drawn by the page: its step is the one the log stopped in
  const over = ["failed", "cancelled"].includes(initial.status);
  if (!over) BinderyLog.setPhase(bar, initial.phase);
  BinderyLog.attach(log, {
    url: "/ws/builds/" + encodeURIComponent(log.dataset.buildId) + "/",
    onStatus(event) {
      if (!["failed", "cancelled"].includes(event.status)) BinderyLog.setPhase(bar, event.phase);
      badge.textContent = event.status.charAt(0).toUpperCase() + event.status.slice(1);
      badge.className = "badge badge-" + event.status;
      // the page renders the failure (once, with its step and the ways on) and the receipt
      const ended = ["failed", "cancelled"].includes(event.status) && error.hidden;
      if (ended || (event.status === "ready" && !hadReceipt)) setTimeout(() => location.reload(), 600);
      if (["ready", "failed", "cancelled"].includes(event.status)) {
        const form = document.getElementById("cancel-form"); if (form) form.remove();
      }
    },
    onEvent(event) { if (event.kind === "log" && event.lines.length) count.textContent = event.lines[event.lines.length - 1].n; },
  });
})();
