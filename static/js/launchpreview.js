// The launch forms' preview (templates/quotas/_launch_preview_box.html): what the launch
// will use and what is left, or the refusal it would meet. The server draws it for the
// team chosen when the page loads; when the team select changes, this asks the server for
// the same box for the new choice (/account/usage/preview/?team=…) and disables Launch
// while the choice would be refused. Without script the button stays as the server drew it.
(function () {
  "use strict";
  const box = document.getElementById("launch-preview");
  if (!box) return;
  const button = document.querySelector(box.dataset.launchButton);
  const select = document.querySelector(box.dataset.teamSelect);

  function sync() {
    if (button) button.disabled = box.querySelector("[data-refused]") !== null;
  }

  let asked = 0;
  async function refresh() {
    const ticket = ++asked;
    const url = box.dataset.previewUrl + "?" + new URLSearchParams({ team: select.value });
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (!response.ok || ticket !== asked) return;
      // The server's own escaped fragment: parsed, then moved in, never run.
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      box.replaceChildren(...doc.body.childNodes);
      sync();
    } catch (error) {
      // Offline or refused: keep what is shown; the launch itself says why if it fails.
    }
  }

  if (select) {
    sync();
    select.addEventListener("change", refresh);
  }
})();
