// The waiting page of a workshop not open yet: count down to the opening, say it in the
// visitor's own time zone, and ask /w/<code>/status every few seconds; once people can
// join (or the code changed), reload: the server then shows the join form.
(function () {
  "use strict";
  const data = document.getElementById("wait-config");
  if (!data) return;
  const state = JSON.parse(data.textContent);
  const opensAt = new Date(state.opens_at);
  const countdown = document.getElementById("countdown");
  const here = document.getElementById("opens-here");
  const POLL_MS = 5000;

  try {
    here.textContent = opensAt.toLocaleString(undefined, {
      weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
    }) + " (" + Intl.DateTimeFormat().resolvedOptions().timeZone + ")";
  } catch (e) { /* keep the dash */ }

  const two = (n) => String(n).padStart(2, "0");
  function tick() {
    const s = Math.max(0, Math.round((opensAt - Date.now()) / 1000));
    if (!state.seconds) return;  // opening passed: the environment is still being prepared
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), sec = s % 60;
    // "2 h 05 min 09 s": units said, so nobody reads 02:13 as a time of day
    const parts = [];
    if (d) parts.push(d + " d");
    if (d || h) parts.push(h + " h");
    parts.push((d || h ? two(m) : m) + " min");
    if (!d) parts.push(two(sec) + " s");
    countdown.textContent = parts.join(" ");
    if (s === 0) poll();
  }

  let polling = false;
  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const response = await fetch(location.pathname + "/status", { headers: { Accept: "application/json" }, cache: "no-store" });
      if (response.status === 404) { location.reload(); return; }
      if (response.ok) {
        const now = await response.json();
        if (now.ready) { location.reload(); return; }
      }
    } catch (e) { /* offline for a moment: try again on the next round */ }
    polling = false;
  }

  tick();
  setInterval(tick, 1000);
  setInterval(poll, POLL_MS);
})();
