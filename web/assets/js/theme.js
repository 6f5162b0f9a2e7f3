// Applies the saved (or the system's) colour theme before the page paints. Classic script, not a
// module, so that it runs before first render; app.js wires the toggle button.
(function () {
  var saved = null;
  try { saved = localStorage.getItem('bitriver-theme'); } catch (e) { /* storage disabled */ }
  var light = window.matchMedia && window.matchMedia('(prefers-color-scheme: light)').matches;
  document.documentElement.dataset.theme = saved === 'light' || saved === 'dark' ? saved : (light ? 'light' : 'dark');
})();
