// Small DOM helpers: build elements without innerHTML (every API string is untrusted), announce
// results in the status region, copy text.

/** `h('button', {class: 'x', onclick: f}, 'Save')`: attributes, `on*` listeners, children. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'value') el.value = value;
    else if (key === 'checked') el.checked = Boolean(value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let toastTimer = null;
/** Announce `message` (polite live region) for a few seconds. */
export function toast(message, isError = false) {
  const el = document.getElementById('toast');
  if (!el) return;
  el.classList.toggle('error', isError);
  el.textContent = message;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.textContent = ''; }, 5000);
}

/** Copy `text` to the clipboard (falls back to a hidden textarea outside secure contexts). */
export async function copyText(text, what = 'Text') {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
    } else {
      const area = h('textarea', { 'aria-hidden': 'true', class: 'offscreen' }, text);
      document.body.append(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
    toast(`${what} copied to the clipboard`);
    return true;
  } catch (e) {
    toast(`Could not copy: ${e.message}`, true);
    return false;
  }
}

/** A labelled input: `field('Title', {name: 'title', required: true})`. */
let fieldCounter = 0;
export function field(label, attrs = {}, hint = '') {
  const id = attrs.id || `f${++fieldCounter}`;
  const tag = attrs.tag || 'input';
  const input = h(tag, { ...attrs, tag: undefined, id, 'aria-describedby': hint ? `${id}-hint` : undefined });
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    input,
    hint ? h('div', { class: 'hint', id: `${id}-hint` }, hint) : null);
}

/** A labelled select with `[value, text]` options. */
export function selectField(label, attrs, options, selected) {
  const id = attrs.id || `f${++fieldCounter}`;
  const select = h('select', { ...attrs, id },
    options.map(([value, text]) => h('option', { value, selected: value === selected ? true : undefined }, text)));
  return h('div', { class: 'field' }, h('label', { for: id }, label), select);
}

export function formatTime(ms) {
  if (!ms) return '—';
  return new Date(ms).toLocaleString();
}

/** `8250` → `0:00:08` (h:mm:ss, what a recording's length reads as). */
export function formatDuration(ms) {
  const total = Math.max(0, Math.round((ms || 0) / 1000));
  const hours = Math.floor(total / 3600);
  const pad = (n) => String(n).padStart(2, '0');
  return `${hours}:${pad(Math.floor(total / 60) % 60)}:${pad(total % 60)}`;
}

/** A `<time>` element showing `ms` as h:mm:ss, with the machine-readable duration. */
export function durationElement(ms, attrs = {}) {
  return h('time', { datetime: `PT${Math.max(0, Math.round((ms || 0) / 1000))}S`, ...attrs }, formatDuration(ms));
}

/** `1234567` → `1.2 MB` (decimal units, like disks and networks count). */
export function formatBytes(bytes) {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = Math.max(0, bytes || 0);
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

export function liveBadge(liveState) {
  return liveState === 'live'
    ? h('span', { class: 'badge live', 'data-live': 'true' }, 'Live')
    : h('span', { class: 'badge', 'data-live': 'false' }, 'Offline');
}

/** A button that acts once per click and stays disabled while `action` runs. */
export function actionButton(text, action, attrs = {}) {
  const button = h('button', { type: 'button', ...attrs }, text);
  button.addEventListener('click', async () => {
    button.disabled = true;
    try { await action(button); } catch (e) { toast(e.message, true); } finally { button.disabled = false; }
  });
  return button;
}
