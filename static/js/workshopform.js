// The create-workshop form: preselect the browser's time zone (the server's default is
// settings.TIME_ZONE) on a fresh form, never over what the person chose or the server
// sent back with errors.
(function () {
  "use strict";
  const form = document.getElementById("workshop-form");
  const zone = document.getElementById("id_time_zone");
  if (!form || !zone || form.querySelector(".error")) return;
  let browser = "";
  try { browser = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { return; }
  if (browser && Array.from(zone.options).some((o) => o.value === browser)) zone.value = browser;
})();
