// Sign-in: an API key, checked against the server, kept in sessionStorage.

import { session, ApiError } from './api.js';
import { h, note } from './dom.js';

/**
 * Checks a key: resolves to {admin: bool}, or rejects with an ApiError
 * saying why it cannot be used.
 */
export async function checkKey(key) {
  const resp = await fetch('/v1/status?objects=false', { headers: { 'x-api-key': key }, cache: 'no-store' }).catch(() => null);
  if (!resp) throw new ApiError(0, 'network', 'The server cannot be reached. Is facefleet still running?');
  if (resp.ok) return { admin: true };
  if (resp.status === 403) return { admin: false };
  if (resp.status === 401) throw new ApiError(401, 'unauthorized', 'This API key is not valid (unknown, mistyped or revoked).');
  if (resp.status === 429) throw new ApiError(429, 'rate_limited', 'This API key is over its rate limit; try again in a moment.');
  throw new ApiError(resp.status, 'error', `The server answered ${resp.status}.`);
}

/** The sign-in page; calls onSignedIn({admin}) once a key works. */
export function mount(main, { onSignedIn, reason }) {
  const input = h('input', { id: 'api-key', name: 'api-key', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true, 'aria-describedby': 'key-help' });
  const button = h('button', { type: 'submit' }, 'Sign in');
  const msg = h('div', { class: 'note', id: 'signin-message' });
  const form = h('form', { class: 'signin card', novalidate: true },
    h('h1', {}, 'Sign in'),
    h('p', { id: 'key-help', class: 'hint' },
      'This stack needs an API key. Create one with ',
      h('code', {}, 'facefleet keys create --scope admin'),
      '. The key stays in this browser tab only (session storage) and is sent as ', h('code', {}, 'x-api-key'), '.'),
    h('label', { for: 'api-key' }, 'API key'),
    input,
    msg,
    h('div', { class: 'actions' }, button));
  if (reason) note(msg, reason);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) {
      note(msg, 'Enter an API key.');
      input.focus();
      return;
    }
    button.disabled = true;
    note(msg, 'Checking the key…', 'info');
    try {
      const who = await checkKey(key);
      session.set(key);
      note(msg, null);
      onSignedIn(who);
    } catch (err) {
      note(msg, err.message);
      input.select();
    } finally {
      button.disabled = false;
    }
  });
  main.replaceChildren(h('section', { class: 'page page-signin', 'aria-labelledby': 'signin-h' }, form));
  form.querySelector('h1').id = 'signin-h';
  input.focus();
  return () => {};
}
