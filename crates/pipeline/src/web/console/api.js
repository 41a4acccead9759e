// The facefleet HTTP API as the console uses it: the API key (kept in
// sessionStorage, so it goes when the tab closes, with what pages keep per
// key), JSON errors turned into ApiError, calls sent again after a short
// 429, and images fetched with the key into blob URLs.

const KEY = 'facefleet.apiKey';
/** How long a read (GET) waits for the server. */
const READ_TIMEOUT_MS = 20000;
/** Attempts of a call answered 429 with a short Retry-After. */
const RATE_RETRIES = 3;

/** What the console keeps per key in sessionStorage: `<prefix><key's tag>.<name>`. */
const PER_KEY = 'facefleet.k.';

/** A short tag of the key ('open' without one): storage of one key is not another's. */
export function tag(key) {
  if (!key) return 'open';
  let x = 0x811c9dc5; // FNV-1a, 32 bits: a name, not a secret
  for (let i = 0; i < key.length; i += 1) x = Math.imul(x ^ key.charCodeAt(i), 0x01000193);
  return (x >>> 0).toString(16);
}

export const session = {
  get key() {
    return sessionStorage.getItem(KEY) || '';
  },
  set(key) {
    sessionStorage.setItem(KEY, key);
  },
  /** The current key's item `name` (parsed JSON), or null. */
  load(name) {
    try {
      return JSON.parse(sessionStorage.getItem(`${PER_KEY}${tag(session.key)}.${name}`));
    } catch {
      return null;
    }
  },
  /** Keeps `value` (as JSON) as the current key's item `name`. */
  save(name, value) {
    try {
      sessionStorage.setItem(`${PER_KEY}${tag(session.key)}.${name}`, JSON.stringify(value));
    } catch (e) {
      console.warn('sessionStorage refused an item', e);
    }
  },
  /**
   * Forgets the key, everything kept for any key (`keepOpen`: but what the
   * open stack keeps, under no key) and the images fetched with it.
   */
  clear(keepOpen = false) {
    sessionStorage.removeItem(KEY);
    const open = `${PER_KEY}${tag('')}.`;
    for (let i = sessionStorage.length - 1; i >= 0; i -= 1) {
      const k = sessionStorage.key(i);
      if (k && k.startsWith(PER_KEY) && !(keepOpen && k.startsWith(open))) sessionStorage.removeItem(k);
    }
    forgetImages('');
  },
};

/** An error answer of the API (`status` 0: the server could not be reached). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  /** The route does not exist on this server (an older facefleet). */
  get noRoute() {
    return this.status === 404 && /no such route/i.test(this.message);
  }
}

/** Called with the error when the server answers 401 to a call made with a key. */
let unauthorized = () => {};
export function onUnauthorized(fn) {
  unauthorized = fn;
}

function headers(extra, key = session.key) {
  const h = new Headers(extra || {});
  if (key) h.set('x-api-key', key);
  return h;
}

/**
 * Seconds to wait before sending again after an answer of `status` on
 * attempt `attempt`, or 0: only a 429 whose Retry-After asks for at most 5 s,
 * up to RATE_RETRIES attempts in all. A 429 comes from the rate limit, before
 * any handler ran, so any request may be sent again.
 */
function rateWait(status, retryAfter, attempt) {
  const wait = Number(retryAfter);
  return status === 429 && attempt < RATE_RETRIES && wait > 0 && wait <= 5 ? wait : 0;
}

const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));

/**
 * fetch(), tried again up to RATE_RETRIES times in all: after a short 429
 * (onWait(seconds) is told first), and, when `network` (a read, or an
 * upload with an Idempotency-Key), 1 s after the network failed.
 */
async function fetchRetrying(path, init, network, onWait) {
  for (let attempt = 1; ; attempt += 1) {
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      if (!network || attempt >= RATE_RETRIES || (init.signal && init.signal.aborted)) throw e;
      await sleep(1);
      continue;
    }
    const wait = rateWait(resp.status, resp.headers.get('retry-after'), attempt);
    if (!wait) return resp;
    if (onWait) onWait(wait);
    await sleep(wait);
  }
}

/** A fresh Idempotency-Key (128 random bits, hex; no secure context needed). */
export function idempotencyKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Turns a failed answer into an ApiError with the server's message. */
export async function errorOf(resp) {
  let code = 'error';
  let message = `${resp.status} ${resp.statusText}`.trim();
  const text = await resp.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    if (text.trim()) message = text.trim().slice(0, 300);
  }
  if (resp.status === 429) {
    const wait = resp.headers.get('retry-after');
    if (wait && !/retry/i.test(message)) message += ` (retry in ${wait} s)`;
  }
  return new ApiError(resp.status, code, message);
}

/**
 * Calls the API. `json`: a body sent as JSON; `form`: a FormData;
 * `anonymous`: without the key; `once`: an Idempotency-Key, which makes the
 * call safe to send again after a network failure (as reads are; every call
 * is sent again after a short 429); `onWait(seconds)`: told when a 429
 * makes it wait. Resolves to the parsed JSON (or text), or rejects with an
 * ApiError.
 */
export async function api(path, { method = 'GET', json, form, anonymous = false, signal, once, onWait } = {}) {
  // The key as the call starts: every attempt goes with it.
  const key = anonymous ? '' : session.key;
  const init = { method, headers: headers(null, key), cache: 'no-store' };
  if (once) init.headers.set('idempotency-key', once);
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers.set('content-type', 'application/json');
  } else if (form) {
    init.body = form;
  }
  // Reads give up after READ_TIMEOUT_MS (a hung server shows as an error,
  // not as a page that stops updating); uploads wait for their answer.
  const timeout = method === 'GET' ? AbortSignal.timeout(READ_TIMEOUT_MS) : null;
  init.signal = signal && timeout ? AbortSignal.any([signal, timeout]) : signal || timeout || undefined;
  let resp;
  try {
    // Rate limited: every call tries again; cut off: reads and idempotent
    // uploads only (an upload may have arrived).
    resp = await fetchRetrying(path, init, method === 'GET' || Boolean(once), onWait);
  } catch (e) {
    if (timeout && timeout.aborted && !(signal && signal.aborted)) {
      throw new ApiError(0, 'timeout', `The server did not answer within ${READ_TIMEOUT_MS / 1000} s. Is it overloaded or stopped?`);
    }
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'The server cannot be reached. Is facefleet still running?');
  }
  if (!resp.ok) {
    const err = await errorOf(resp);
    // A 401 for a key signed out meanwhile says nothing of the current one.
    if (resp.status === 401 && !anonymous && key === session.key) unauthorized(err);
    throw err;
  }
  const type = resp.headers.get('content-type') || '';
  return type.includes('json') ? resp.json() : resp.text();
}

const blobs = new Map();

/** An image of the API (thumbnail, frame) as a blob URL, fetched once with the key. */
export async function imageUrl(path) {
  if (blobs.has(path)) return blobs.get(path);
  const p = (async () => {
    let resp;
    try {
      resp = await fetchRetrying(path, { headers: headers(), cache: 'default' }, true);
    } catch {
      throw new ApiError(0, 'network', 'The server cannot be reached.');
    }
    if (!resp.ok) throw await errorOf(resp);
    return URL.createObjectURL(await resp.blob());
  })();
  blobs.set(path, p);
  p.catch(() => blobs.delete(path));
  return p;
}

/** Forgets cached images whose path starts with `prefix`. */
export function forgetImages(prefix) {
  for (const [path, p] of blobs) {
    if (path.startsWith(prefix)) {
      blobs.delete(path);
      p.then((u) => URL.revokeObjectURL(u), () => {});
    }
  }
}

/**
 * Uploads `form` with upload progress (fetch cannot report it):
 * onProgress(fraction 0..1). Sent again after a short 429, like api()
 * (onWait(seconds) is told first), with the same `key` (the current one
 * when the upload starts, whoever signs in meanwhile); never after a
 * network failure, since the server may have stored it. Resolves to the
 * parsed JSON answer.
 */
export function upload(path, form, onProgress, onWait = () => {}, key = session.key) {
  return new Promise((resolve, reject) => {
    const send = (attempt) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', path);
      if (key) xhr.setRequestHeader('x-api-key', key);
      xhr.upload.addEventListener('progress', (e) => {
        if (e.lengthComputable) onProgress(e.loaded / e.total);
      });
      xhr.addEventListener('load', async () => {
        const wait = rateWait(xhr.status, xhr.getResponseHeader('retry-after'), attempt);
        if (wait) {
          onWait(wait);
          setTimeout(() => send(attempt + 1), wait * 1000);
          return;
        }
        if (xhr.status >= 200 && xhr.status < 300) {
          try {
            resolve(JSON.parse(xhr.responseText));
          } catch {
            resolve({});
          }
          return;
        }
        const resp = new Response(xhr.responseText, {
          status: xhr.status,
          statusText: xhr.statusText,
          headers: { 'content-type': xhr.getResponseHeader('content-type') || '', 'retry-after': xhr.getResponseHeader('retry-after') || '' },
        });
        const err = await errorOf(resp);
        if (xhr.status === 401 && key === session.key) unauthorized(err);
        reject(err);
      });
      xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'The upload failed: the server cannot be reached.')));
      xhr.send(form);
    };
    send(1);
  });
}

/** Path segment, encoded. */
export const seg = (s) => encodeURIComponent(s);
