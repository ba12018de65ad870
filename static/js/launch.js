// The launch page: start the session (POST to this /v2/ URL) when the person presses
// Launch (or at once when the page says so: a navigation from the portal itself), follow
// its websocket — build lines into the terminal, steps into the phase bar — then open the
// server. Its settings come from the json_script block #launch-config.
//
// When this repository and ref already run, the page offers Open and Start another (the
// same form, with another=1) instead, and nothing starts by itself.
//
// A failure is said once, in the failure panel (partials/error_panel.html): a refusal fills
// it from the JSON the POST returns; a launch that fails later reloads the page, which the
// server renders with the failure, its step and the ways on.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);

  function phaseOf(item) {
    if (item.kind === "log") return item.phase === "fetching" ? "fetching" : "building";
    return { waiting: "waiting", built: "launching", launching: "launching", ready: "ready" }[item.phase];
  }

  // "Building the environment · 1:05": how long this has taken so far.
  const clock = {
    started: Date.now(), timer: null,
    start() {
      if (this.timer) return;
      this.started = Date.now();
      this.timer = setInterval(() => {
        const s = Math.floor((Date.now() - this.started) / 1000);
        $("launch-elapsed").textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
      }, 1000);
    },
    stop() { clearInterval(this.timer); this.timer = null; },
  };

  // The builder's own progress lines (apps/builds/backends/progress.py: uv's and the bytecode
  // step's milestones, postBuild), shown beside the status: "Building the environment…
  // Installed 114 packages in 2.7 s".
  const PROGRESS = /^(Resolv|Prepared |Install|Downloading |Building .* from source|Compil|Running .*postBuild|Creating the virtual)/;

  function progressOf(item) {
    const lines = (item.lines || [item]).map((l) => l.text || "").filter((t) => PROGRESS.test(t));
    return lines.length ? "· " + lines[lines.length - 1].replace(/\s+$/, "") : "";
  }

  function say(text) { $("launch-message-text").textContent = text; }

  function showLog() { $("log-details").hidden = false; }

  function showFailure(failure) {
    clock.stop();
    const panel = $("launch-failure");
    const title = panel.querySelector("[data-part=title]");  // absent: the page's h1 says it
    if (title) title.textContent = failure.title;
    panel.querySelector("[data-part=message]").textContent = failure.message;
    const actions = panel.querySelector("[data-part=actions]");
    actions.replaceChildren();
    failure.actions.forEach((action, i) => {
      const link = document.createElement("a");
      link.href = action.url; link.textContent = action.label; link.setAttribute("role", "button");
      link.dataset.action = action.kind;
      if (i > 0) link.className = "secondary outline";
      actions.append(link, " ");
    });
    const code = panel.querySelector("[data-part=code]");
    code.replaceChildren();
    if (failure.code) {
      const c = document.createElement("code"); c.textContent = failure.code;
      code.append("Error code ", c);
    }
    panel.hidden = false;
    $("launch-message").hidden = true;
    $("launch-title").textContent = failure.title;
    BinderyLog.setPhase($("phase-bar"), failure.step, true);
  }

  function follow(sessionId, watchOnly) {
    const bar = $("phase-bar");
    let ended = false;
    let lastEvent = 0;
    let reusing = false;
    let progress = "";
    if (!watchOnly) { BinderyLog.setPhase(bar, "waiting"); clock.start(); }
    BinderyLog.attach($("log"), {
      url: "/ws/launches/" + sessionId + "/",
      resume: (lastLine) => "after_line=" + lastLine + "&after_event=" + lastEvent,
      onEvent(item, term) {
        if (item.kind === "log") {
          showLog();
          if (ended || watchOnly) return;
          const phase = phaseOf(item);
          BinderyLog.setPhase(bar, phase);
          if (/^The environment is ready: reusing it/.test((item.lines || [item]).map((l) => l.text).join("\n"))) reusing = true;
          const step = progressOf(item);
          if (step) progress = step;
          say(phase === "fetching" ? "Fetching the repository…"
            : reusing ? "Reusing an environment built before…"
            : "Building the environment…" + (progress ? " " + progress : ""));
        } else if (item.kind === "event") {
          if (item.n <= lastEvent) return;
          lastEvent = item.n;
          // the failure panel says how it ended; the log keeps the steps before it
          if (item.phase === "failed" || item.phase === "stopped") { ended = true; return; }
          showLog();
          term.writeln("\x1b[36m" + item.message + "\x1b[0m");
          if (watchOnly) return;
          say(item.message);
          const phase = phaseOf(item);
          if (phase) BinderyLog.setPhase(bar, phase);
        }
      },
      onStatus(item) {
        if (watchOnly) return;
        if (item.status === "failed" || item.status === "stopped") {
          ended = true;
          clock.stop();
          location.replace("/sessions/" + sessionId + "/");  // the page says how it ended
        }
        if (item.status === "ready") {
          clock.stop();
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
    for (const id of ["launch-confirm", "launch-running"]) if ($(id)) $(id).hidden = true;
    $("launch-progress").hidden = false;
    clock.start();
    const url = location.pathname + (options.query ? "?" + options.query : "");
    const form = $("launch-form");
    const body = new FormData(form);
    const response = await fetch(url, {
      method: "POST", body,
      headers: { "X-CSRFToken": body.get("csrfmiddlewaretoken"), Accept: "application/json" },
      credentials: "same-origin",
    });
    const answer = await response.json();
    if (response.status === 409 && answer.running) {
      location.replace(location.href);  // it started elsewhere meanwhile: the page offers it
      return;
    }
    if (!response.ok) {
      showFailure(answer.failure || {
        title: "The launch could not start", message: answer.detail, code: answer.error,
        step: "waiting", actions: [],
      });
      return;
    }
    history.replaceState(null, "", "/sessions/" + answer.session + "/");
    follow(answer.session, false);
  }

  function start(options) {
    if (options.sessionId) { follow(options.sessionId, false); return; }
    if (options.logSessionId) { follow(options.logSessionId, true); return; }  // ended: the log only
    if (!$("launch-form")) return;  // a refusal the page already shows
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
