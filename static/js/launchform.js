// The launch form: as you type, ask the portal what the input resolves to and show the
// spec, the shareable link and the badge Markdown; Launch goes to the /v2/ launch page.
(function () {
  "use strict";
  const form = document.getElementById("launch-form");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  let launchPath = null;
  let timer = null;
  let generation = 0;

  async function update() {
    const mine = ++generation;
    const params = new URLSearchParams({
      repository: $("repository").value, ref: $("ref").value,
      path: $("path").value, pathtype: $("pathtype").value,
    });
    if (!$("repository").value.trim()) { show(null); return; }
    const response = await fetch("/launch-link?" + params, { headers: { Accept: "application/json" } });
    if (mine !== generation) return;  // a newer keystroke won
    const body = await response.json();
    if (!response.ok) { show(null, body.detail + " (" + body.error + ")"); return; }
    show(body);
  }

  function show(body, error) {
    launchPath = body ? body.launch_path : null;
    $("launch-button").disabled = !body;
    $("launch-result").hidden = !body;
    $("launch-error").hidden = !error;
    $("launch-error").textContent = error || "";
    if (body) {
      $("spec").textContent = body.spec;
      $("share-link").value = body.link;
      $("badge-md").value = body.markdown;
    }
  }

  form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(update, 250); });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (launchPath) location.href = launchPath;
  });
})();
