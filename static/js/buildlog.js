// A terminal-style live log (xterm.js) fed by a websocket of build or launch events.
// Usage: BinderyLog.attach(element, {url, onStatus(event), onEvent(event)}).
(function () {
  "use strict";

  function makeTerminal(element) {
    const term = new window.Terminal({
      convertEol: true,
      disableStdin: true,
      cursorBlink: false,
      scrollback: 100000,
      fontSize: 13,
      fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace',
      theme: { background: "#0f172a", foreground: "#e2e8f0" },
    });
    const fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(element);
    fit.fit();
    window.addEventListener("resize", () => fit.fit());
    return term;
  }

  function attach(element, options) {
    const term = makeTerminal(element);
    let last = 0;
    let closedOnPurpose = false;
    let retry = 500;

    function connect() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const sep = options.url.includes("?") ? "&" : "?";
      const resume = options.resume ? options.resume(last) : "after=" + last;
      const socket = new WebSocket(scheme + location.host + options.url + sep + resume);
      socket.onmessage = (message) => {
        const event = JSON.parse(message.data);
        retry = 500;
        if (event.kind === "log") {
          for (const line of event.lines || [event]) {
            if (line.n <= last) continue;
            last = line.n;
            const text = line.stream === "stderr" && /^(error|fatal)/i.test(line.text)
              ? "\x1b[31m" + line.text + "\x1b[0m" : line.text;
            term.writeln(text);
          }
        } else if (event.kind === "status") {
          options.onStatus && options.onStatus(event);
          if (["ready", "failed", "cancelled", "stopped"].includes(event.status)) closedOnPurpose = true;
        }
        options.onEvent && options.onEvent(event, term);
      };
      socket.onclose = (close) => {
        if (closedOnPurpose || close.code === 1000 || close.code === 4404) return;
        setTimeout(connect, retry);  // reconnect and resume after the last line we have
        retry = Math.min(retry * 2, 10000);
      };
    }
    connect();
    return term;
  }

  function setPhase(bar, phase, failed) {
    const steps = Array.from(bar.querySelectorAll("[data-phase]"));
    const index = steps.findIndex((step) => step.dataset.phase === phase);
    steps.forEach((step, i) => {
      const isFailed = Boolean(failed) && i === Math.max(index, 0);
      step.classList.toggle("done", index >= 0 && i < index);
      step.classList.toggle("current", i === index);
      step.classList.toggle("failed", isFailed);
      // said in words too, as the server draws it (templates/builds/_progress.html)
      let note = step.querySelector("small[data-failed]");
      if (isFailed && !note && !step.querySelector("small")) {
        note = document.createElement("small");
        note.dataset.failed = "";
        note.textContent = " · failed";
        step.append(note);
      } else if (!isFailed && note) {
        note.remove();
      }
      if (isFailed) step.setAttribute("aria-current", "step");
      else step.removeAttribute("aria-current");
    });
  }

  window.BinderyLog = { attach, setPhase };
})();
