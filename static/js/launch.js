// The launch page: start the session (POST to this /v2/ URL) when the person presses
// Launch (or at once when the page says so: a navigation from the portal itself), follow
// its websocket — build lines into the terminal, steps into the phase bar — then open the
// server. Its settings come from the json_script block #launch-config.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);

  function phaseOf(item) {
    if (item.kind === "log") return item.phase === "fetching" ? "fetching" : "building";
    return { waiting: "waiting", built: "launching", launching: "launching", ready: "ready" }[item.phase];
  }

  function follow(sessionId) {
    const bar = $("phase-bar");
    let failed = false;
    let lastEvent = 0;
    BinderyLog.setPhase(bar, "waiting");
    BinderyLog.attach($("log"), {
      url: "/ws/launches/" + sessionId + "/",
      resume: (lastLine) => "after_line=" + lastLine + "&after_event=" + lastEvent,
      onEvent(item, term) {
        if (item.kind === "log") {
          if (failed) return;
          const phase = phaseOf(item);
          BinderyLog.setPhase(bar, phase);
          $("launch-message").textContent = phase === "fetching"
            ? "Fetching the repository…" : "Building the environment (this happens once per set of dependencies)…";
        } else if (item.kind === "event") {
          if (item.n <= lastEvent) return;
          lastEvent = item.n;
          term.writeln("\x1b[36m" + item.message + "\x1b[0m");
          $("launch-message").textContent = item.message;
          if (item.phase === "failed" || item.phase === "stopped") failed = true;
          const phase = phaseOf(item);
          if (phase) BinderyLog.setPhase(bar, phase, failed);
        }
      },
      onStatus(item) {
        if (item.status === "failed" || item.status === "stopped") {
          failed = true;
          $("launch-error").hidden = false;
          $("launch-error").textContent = item.error_message || "The session has ended.";
          $("launch-title").textContent = item.status === "failed" ? "The launch failed" : "This session has ended";
          const current = bar.querySelector(".current");
          BinderyLog.setPhase(bar, current ? current.dataset.phase : "waiting", true);
        }
        if (item.status === "ready") {
          BinderyLog.setPhase(bar, "ready");
          $("launch-title").textContent = "Your environment is ready";
          const open = "/sessions/" + sessionId + "/open/";
          $("open-link").href = open;
          $("ready-actions").hidden = false;
          location.href = open;
        }
      },
    });
  }

  async function launch(options) {
    $("launch-confirm") && ($("launch-confirm").hidden = true);
    $("launch-progress").hidden = false;
    const url = location.pathname + (options.query ? "?" + options.query : "");
    const csrf = document.querySelector("#launch-form [name=csrfmiddlewaretoken]").value;
    const response = await fetch(url, {
      method: "POST", headers: { "X-CSRFToken": csrf, Accept: "application/json" },
      credentials: "same-origin",
    });
    const body = await response.json();
    if (!response.ok) {
      $("launch-title").textContent = "The launch could not start";
      $("launch-error").hidden = false;
      $("launch-error").textContent = body.detail + " (" + body.error + ")";
      $("launch-message").textContent = "";
      BinderyLog.setPhase($("phase-bar"), "waiting", true);
      return;
    }
    history.replaceState(null, "", "/sessions/" + body.session + "/");
    follow(body.session);
  }

  function start(options) {
    if (options.sessionId) { follow(options.sessionId); return; }
    if (options.autostart) { launch(options); return; }
    $("launch-form").addEventListener("submit", (event) => {
      event.preventDefault();
      $("launch-button").disabled = true;
      launch(options);
    });
  }

  window.BinderyLaunch = { start };
  const config = document.getElementById("launch-config");
  if (config) start(JSON.parse(config.textContent));
})();
