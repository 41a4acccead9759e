// The console's entry point: finds out whether the stack needs a key,
// signs in, and shows one page at a time (#/recognize, #/gallery, #/video,
// #/fleet). A page may keep its state in the address's query
// (#/gallery?collection=x): a change of the query alone goes to the shown
// page's onRoute, without mounting it again.

import { api, session, onUnauthorized } from './api.js';
import { h, toast, hashQuery } from './dom.js';
import * as signin from './signin.js';
import * as recognize from './recognize.js';
import * as gallery from './gallery.js';
import * as video from './video.js';
import * as fleet from './fleet.js';

const pages = {
  recognize: { title: 'Recognize', module: recognize },
  gallery: { title: 'Gallery', module: gallery },
  video: { title: 'Video', module: video },
  fleet: { title: 'Fleet', module: fleet },
};

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const signOut = document.getElementById('signout');

// What the console knows about its access: 'open' (no key needed), 'key'
// (signed in), or null (not signed in yet). `collection`: the last one
// shown (Gallery and Recognize open it when the address names none).
const ctx = { mode: null, admin: false, collection: null };
let unmount = null;
let onRoute = null;
let shown = null;

function pageName() {
  const m = /^#\/([a-z]+)/.exec(location.hash);
  return m && pages[m[1]] ? m[1] : 'recognize';
}

function leave() {
  if (unmount) {
    try {
      unmount();
    } catch (e) {
      console.error(e);
    }
  }
  unmount = null;
  onRoute = null;
  shown = null;
}

function showHeader() {
  const signedIn = ctx.mode !== null;
  nav.hidden = !signedIn;
  // Fleet shows the stack's status: admin keys only.
  const fleetLink = nav.querySelector('a[data-page="fleet"]');
  if (fleetLink) fleetLink.parentElement.hidden = !ctx.admin;
  signOut.hidden = ctx.mode !== 'key';
  who.textContent = ctx.mode === 'open' ? 'Open stack: no key needed' : ctx.mode === 'key' ? (ctx.admin ? 'Signed in (admin)' : 'Signed in') : '';
}

function render() {
  showHeader();
  if (ctx.mode === null) return;
  const name = pageName();
  if (shown === name) {
    // Same page, another query (Back to the previous collection): in place.
    if (onRoute) onRoute(hashQuery());
    return;
  }
  leave();
  shown = name;
  for (const a of nav.querySelectorAll('a[data-page]')) {
    if (a.dataset.page === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${pages[name].title} · facefleet`;
  main.replaceChildren();
  // mount() returns its clean-up, or {unmount, onRoute}.
  const m = pages[name].module.mount(main, ctx, hashQuery()) || null;
  unmount = typeof m === 'function' ? m : m && m.unmount;
  onRoute = (m && m.onRoute) || null;
  main.focus({ preventScroll: true });
}

function showSignIn(reason) {
  leave();
  ctx.mode = null;
  ctx.collection = null;
  showHeader();
  document.title = 'Sign in · facefleet';
  unmount = signin.mount(main, {
    reason,
    onSignedIn: ({ admin }) => {
      leave();
      ctx.mode = 'key';
      ctx.admin = admin;
      render();
    },
  });
}

onUnauthorized((err) => {
  if (ctx.mode === 'key') {
    session.clear();
    showSignIn(`Signed out: ${err.message}`);
  } else if (ctx.mode === 'open') {
    // A key was created since the console opened: the stack is no longer open.
    showSignIn('This stack now requires an API key.');
  }
});

signOut.addEventListener('click', () => {
  session.clear();
  showSignIn('Signed out.');
});

// Also on Back/Forward between entries a page pushed (history.pushState).
window.addEventListener('hashchange', () => {
  if (/^#\//.test(location.hash)) render();
});

// The skip link moves focus to the page without changing the address (a
// `#main` hash would make a reload open the first page).
document.querySelector('a.skip')?.addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});

async function boot() {
  // Open stack: /v1/status answers without a key.
  try {
    await api('/v1/status?objects=false', { anonymous: true });
    ctx.mode = 'open';
    ctx.admin = true;
    // A key left from before the stack was opened is forgotten, with what
    // was kept for it; the open stack's own remembered videos stay.
    if (session.key) session.clear(true);
    render();
    return;
  } catch (err) {
    if (err.status !== 401 && err.status !== 403) {
      main.replaceChildren(h('section', { class: 'page' },
        h('h1', {}, 'facefleet'),
        h('p', { class: 'note note-error', role: 'alert' }, err.message),
        h('button', { type: 'button', onclick: () => boot() }, 'Try again')));
      return;
    }
  }
  if (session.key) {
    try {
      const r = await signin.checkKey(session.key);
      ctx.mode = 'key';
      ctx.admin = r.admin;
      render();
      return;
    } catch (err) {
      session.clear();
      showSignIn(err.message);
      return;
    }
  }
  showSignIn();
}

window.addEventListener('unhandledrejection', (e) => {
  const err = e.reason;
  if (err && err.name === 'AbortError') return;
  toast(err && err.message ? err.message : String(err), 'error');
});

boot();
