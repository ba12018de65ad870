// The launch form: as you type (at once on paste), ask the portal what the input resolves
// to and show the repository's name, the shareable link and the badges, or why this site
// will not launch it (then no link and no badge). Launch goes to the /v2/ launch page (which
// asks a signed-out visitor to sign in and comes back with the same spec); when the same
// repository and ref already runs, it offers "Open" and "Start another" instead.
(function () {
  "use strict";
  const form = document.getElementById("launch-form");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  let current = null;     // the last answer, for the input it answered
  let answered = "";      // the query string that answer was for
  let pending = null;     // the request in flight: { query, promise }
  let timer = null;

  function query() {
    return new URLSearchParams({
      repository: $("repository").value.trim(), ref: $("ref").value.trim(),
      path: $("path").value.trim(), pathtype: $("pathtype").value,
    }).toString();
  }

  async function fetchPreview(q) {
    const response = await fetch("/launch-link?" + q, { headers: { Accept: "application/json" } });
    let body = {};
    try { body = await response.json(); } catch (e) { body = { detail: "The portal did not answer; try again." }; }
    return { ok: response.ok, body };
  }

  // The answer for what the form holds now (a request already in flight for it is reused).
  function resolveNow() {
    clearTimeout(timer);
    const q = query();
    if (!$("repository").value.trim()) { show(null); answered = q; return Promise.resolve(null); }
    if (q === answered) return Promise.resolve(current);
    if (pending && pending.query === q) return pending.promise;
    const promise = fetchPreview(q).then((result) => {
      if (query() !== q) return null;  // a newer keystroke won; its own request shows it
      answered = q;
      show(result.ok ? result.body : null, result.ok ? null : result.body);
      return current;
    }, () => {
      show(null, { detail: "The portal could not be reached; check your connection." });
      return null;
    }).finally(() => { if (pending && pending.query === q) pending = null; });
    pending = { query: q, promise };
    return promise;
  }

  function show(body, error) {
    current = body;
    $("launch-result").hidden = !body;
    $("launch-error").hidden = !error;
    $("launch-error-text").textContent = error ? error.detail || "This cannot be launched." : "";
    $("launch-error-code").textContent = error && error.error ? "Error code " + error.error : "";
    const running = body && body.running;
    $("launch-running").hidden = !running;
    $("launch-button").hidden = Boolean(running);
    if (running) {
      $("running-name").textContent = running.name;
      $("running-status").textContent = "(" + running.status + ")";
      $("running-open").textContent = running.open ? "Open" : "Watch";
      $("running-open").href = running.open || running.page;
      // another=1: the /v2/ page would otherwise offer this running session again
      $("running-start-another").href = body.launch_path + (body.launch_path.includes("?") ? "&" : "?") + "another=1";
    }
    if (body) {
      $("preview-name").textContent = body.name;
      $("preview-name").title = body.name_full;
      $("share-link").value = body.link;
      $("badge-md").value = body.markdown;
      $("badge-rst").value = body.rst;
    }
  }

  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(resolveNow, 250);
  });
  // A paste is a whole value: resolve at once (after the browser has put it in the field).
  form.addEventListener("paste", () => { setTimeout(resolveNow, 0); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = await resolveNow();  // paste + Enter: the answer for what was pasted
    if (!body) return;
    if (body.running) { $("running-open").focus(); return; }
    location.href = body.launch_path;
  });
})();
