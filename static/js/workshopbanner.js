// An attendee's seat banner: keep "1 h 12 min left" current without reloading.
(function () {
  "use strict";
  const left = document.getElementById("seat-left");
  if (!left || !left.dataset.endsAt) return;
  const ends = new Date(left.dataset.endsAt);
  function say() {
    const s = Math.max(0, Math.round((ends - Date.now()) / 1000));
    const m = Math.floor(s / 60);
    left.textContent = s <= 0 ? "no time" : m < 1 ? "under a minute"
      : m < 60 ? m + " min" : m >= 48 * 60 ? Math.floor(m / 1440) + " days"
      : Math.floor(m / 60) + " h" + (m % 60 ? " " + (m % 60) + " min" : "");
  }
  say();
  setInterval(say, 15000);
})();
