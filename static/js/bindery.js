// Small progressive enhancements shared by pages.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.querySelector(button.dataset.copy);
  if (!field) return;
  const text = field.value ?? field.textContent;
  navigator.clipboard?.writeText(text).then(() => {
    const before = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = before; }, 1500);
  }).catch(() => { field.select?.(); });
});

// Behaviours pages ask for with data attributes (the Content-Security-Policy allows no
// inline handlers): confirm before submitting, submit on change, select on click.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});
document.addEventListener("change", (event) => {
  const field = event.target.closest("[data-submit-on-change]");
  if (field && field.form) field.form.requestSubmit ? field.form.requestSubmit() : field.form.submit();
});
document.addEventListener("click", (event) => {
  const field = event.target.closest("[data-select-on-click]");
  if (field && field.select) field.select();
});

// The site navigation folds behind a Menu button on narrow screens (CSS hides it there
// unless the header has .nav-open).
document.addEventListener("click", (event) => {
  const toggle = event.target.closest(".nav-toggle");
  if (!toggle) return;
  const header = toggle.closest(".site-header");
  const open = !header.classList.contains("nav-open");
  header.classList.toggle("nav-open", open);
  toggle.setAttribute("aria-expanded", String(open));
});
