// Small DOM helpers: element builders, messages, confirmation dialogs, the
// address's query.
// Everything is built with DOM calls (never innerHTML with data), so names
// from the gallery can hold any character safely.

const SVG_NS = 'http://www.w3.org/2000/svg';

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function setProps(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string' && k !== 'list') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  return el;
}

/** An HTML element: h('button', {type: 'button', onclick}, 'Label'). */
export function h(tag, props, ...children) {
  return append(setProps(document.createElement(tag), props), children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  return append(el, children);
}

/** Removes every child of `el`, then appends `children`. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A message in the corner (errors stay until dismissed; others fade). */
export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  const close = h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss message' }, '×');
  const item = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, h('span', {}, message), close);
  close.addEventListener('click', () => item.remove());
  box.append(item);
  if (kind !== 'error') setTimeout(() => item.remove(), 6000);
  while (box.children.length > 4) box.firstElementChild.remove();
  return item;
}

/** A message in a reserved place of a page (replaces the previous one). */
export function note(el, message, kind = 'error') {
  if (!message) {
    el.replaceChildren();
    el.className = 'note';
    return;
  }
  el.className = `note note-${kind}`;
  el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  fill(el, message);
}

/** Asks for confirmation in a modal dialog; resolves true when confirmed. */
export function confirmDialog(title, text, confirmLabel) {
  return new Promise((resolve) => {
    const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
    const ok = h('button', { type: 'button', class: 'danger', 'data-confirm': '' }, confirmLabel);
    const id = `dlg-${Math.random().toString(36).slice(2)}`;
    const dlg = h('dialog', { class: 'confirm', 'aria-labelledby': id },
      h('h2', { id }, title), h('p', {}, text), h('div', { class: 'actions' }, cancel, ok));
    let answer = false;
    cancel.addEventListener('click', () => dlg.close());
    ok.addEventListener('click', () => { answer = true; dlg.close(); });
    dlg.addEventListener('close', () => { dlg.remove(); resolve(answer); });
    document.body.append(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

/** Milliseconds as "812 ms" or "2.4 s". */
export function ms(v) {
  if (v === null || v === undefined) return '–';
  return v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`;
}

/** A similarity (cosine, -1..1) as "0.83". */
export function sim(v) {
  return typeof v === 'number' ? v.toFixed(2) : '–';
}

/**
 * Makes `zone` accept dropped files (and keeps the file input inside it
 * working for keyboard and click users): calls onFiles(File[]).
 */
export function dropZone(zone, onFiles, accept = (f) => true) {
  const files = (list) => {
    const all = Array.from(list || []);
    const ok = all.filter(accept);
    if (ok.length < all.length) {
      const n = all.length - ok.length;
      toast(`Skipped ${n} file${n === 1 ? '' : 's'} of a type this page does not take.`, 'error');
    }
    return ok;
  };
  zone.addEventListener('dragover', (e) => {
    if (!e.dataTransfer || !Array.from(e.dataTransfer.types).includes('Files')) return;
    e.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    const f = files(e.dataTransfer && e.dataTransfer.files);
    if (f.length) onFiles(f);
  });
  const input = zone.querySelector('input[type=file]');
  if (input) {
    input.addEventListener('change', () => {
      const f = files(input.files);
      input.value = '';
      if (f.length) onFiles(f);
    });
  }
}

/** The address's query: `#/gallery?collection=x` → URLSearchParams {collection: x}. */
export function hashQuery() {
  const i = location.hash.indexOf('?');
  return new URLSearchParams(i < 0 ? '' : location.hash.slice(i + 1));
}

/**
 * Whether `name` can be a collection's (the server's rule): a value of the
 * address that is not is never put in an API path (`..` would lead elsewhere).
 */
export function isCollectionName(name) {
  return typeof name === 'string' && /^[a-z0-9][a-z0-9_-]{0,63}$/.test(name);
}

/**
 * Puts `collection` into the address of `page` (no hashchange follows):
 * `push` (a person's pick) adds a history entry, else (the page's own
 * choice) the current entry is replaced. Nothing when it is there already.
 */
export function showCollection(page, collection, push) {
  const hash = `#/${page}?collection=${encodeURIComponent(collection)}`;
  if (location.hash === hash) return;
  if (push) history.pushState(null, '', hash);
  else history.replaceState(history.state, '', hash);
}

/** Runs `task` over `items`, at most `n` at once. */
export async function pool(items, n, task) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await task(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}
