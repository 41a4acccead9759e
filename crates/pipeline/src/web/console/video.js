// Video: upload a video, watch it being split and recognized, see its
// frames as a strip with the names found in each, and the final name. The
// tab remembers its uploads (sessionStorage, per key, the latest 20): the
// page shows them again when it comes back, and an upload still being sent
// when the page was left is remembered once the server accepts it. An
// upload belongs to the key it was started with: another key's page does
// not show it, and it is not remembered once that key has signed out.

import { api, upload, imageUrl, seg, session, tag } from './api.js';
import { h, fill, note, toast, dropZone } from './dom.js';

const isVideo = (f) => /^video\//.test(f.type) || /\.(mp4|m4v|mov|3gp|mkv|webm|avi)$/i.test(f.name);
const POLL_MS = 1000;
const GIVE_UP_MS = 15 * 60 * 1000;
/** Errors in a row past GIVE_UP_MS before the page stops asking (an old video's first answer may be a passing error). */
const GIVE_UP_ERRORS = 5;
/** Uploads remembered per key. */
const REMEMBERED = 20;

function nameBadge(n) {
  if (n === 'Unknown') return h('span', { class: 'badge badge-unknown' }, 'Unknown');
  if (n === 'NoFace') return h('span', { class: 'badge badge-noface' }, 'No face');
  return h('span', { class: 'badge badge-known' }, n);
}

/** The remembered uploads, newest first: [{stem, file, at}]. */
function remembered() {
  const list = session.load('videos');
  return Array.isArray(list) ? list.filter((v) => v && typeof v.stem === 'string' && typeof v.file === 'string') : [];
}

function remember(v) {
  session.save('videos', [v, ...remembered().filter((o) => o.stem !== v.stem)].slice(0, REMEMBERED));
}

function forget(stem) {
  session.save('videos', remembered().filter((o) => o.stem !== stem));
}

/**
 * Uploads being sent: they outlive the page, which draws them again when it
 * comes back (those of the key signed in only: `job.key` is its tag).
 */
const sending = new Set();

/** Sends `file` with the current key: a job whose `done` resolves to the server's answer (remembered by then). */
function send(file) {
  const key = session.key;
  const job = { file, key: tag(key), stage: 'Uploading…', fraction: 0, watch: () => {}, follower: null };
  const form = new FormData();
  form.append('video', file, file.name);
  const progress = (f) => {
    job.fraction = f;
    job.stage = `Uploading ${Math.round(f * 100)} %`;
    job.watch();
  };
  const waiting = (secs) => {
    job.fraction = 0;
    job.stage = `Rate limited, retrying in ${secs} s…`;
    job.watch();
  };
  // Every attempt (after a 429) goes with the key it started with.
  job.done = upload('/v1/videos', form, progress, waiting, key).then((accepted) => {
    sending.delete(job);
    // Signed out meanwhile, and not signed in again with this key: dropped
    // (not the new key's video, and the old key's storage was forgotten).
    if (session.key === key) remember({ stem: accepted.stem, file: file.name, at: Date.now() });
    return accepted;
  }, (err) => {
    sending.delete(job);
    throw err;
  });
  sending.add(job);
  return job;
}

export function mount(main) {
  let gone = false;
  // The key this page is drawn for: its uploads only, polled with it only.
  const mine = tag(session.key);
  const left = () => gone || tag(session.key) !== mine;
  const input = h('input', { id: 'video-file', type: 'file', accept: 'video/*,.mp4,.mov,.mkv,.webm,.avi', class: 'sr-only' });
  const zone = h('label', { class: 'drop', for: 'video-file' }, input,
    h('span', { class: 'drop-title' }, 'Drop a video here'),
    h('span', { class: 'hint' }, 'or ', h('span', { class: 'link' }, 'choose a file'), ' (MP4/MOV, Matroska/WebM, AVI)'));
  const msg = h('div', { class: 'note' });
  const list = h('ol', { class: 'videos', id: 'videos', 'aria-label': 'Uploaded videos' });
  main.append(h('section', { class: 'page', 'aria-labelledby': 'vid-h' },
    h('div', { class: 'page-head' }, h('h1', { id: 'vid-h' }, 'Video')),
    h('p', { class: 'hint' }, 'A video is stored, split into frames with ffmpeg, and each frame is recognized; the video’s person is the name found most often. Enroll its person in the Gallery first. This tab remembers its last 20 videos until you sign out.'),
    zone, msg, list));

  /** A video's card (not yet in the list). */
  function card(fileName) {
    const c = {
      stage: h('span', { class: 'video-stage', role: 'status' }, 'Uploading…'),
      when: h('time', { class: 'hint video-at' }),
      bar: h('progress', { max: 100, value: 0, 'aria-label': `Progress of ${fileName}` }),
      final: h('div', { class: 'video-final' }, h('span', { class: 'hint' }, 'Result: '), h('span', { class: 'final-name hint' }, 'waiting')),
      strip: h('ol', { class: 'frames', 'aria-label': `Frames of ${fileName}` }),
      msg: h('div', { class: 'note' }),
    };
    c.li = h('li', { class: 'card video', dataset: { file: fileName, state: 'uploading' } },
      h('div', { class: 'video-head' }, h('h2', { class: 'video-name' }, fileName), c.when, c.stage),
      c.bar, c.final, c.strip, c.msg);
    return c;
  }

  /** Shows when the video was uploaded. */
  function uploadedAt(c, at) {
    const d = new Date(at);
    c.when.setAttribute('datetime', d.toISOString());
    c.when.textContent = `uploaded ${d.toLocaleTimeString()}`;
  }

  /** Draws an upload in progress, then follows the video. */
  async function follow(job) {
    const c = card(job.file.name);
    list.prepend(c.li);
    job.follower = c; // the latest page's card
    job.watch = () => {
      c.stage.textContent = job.stage;
      c.bar.value = Math.round(job.fraction * 100);
    };
    job.watch();
    let accepted;
    try {
      accepted = await job.done;
    } catch (err) {
      c.li.dataset.state = 'failed';
      c.stage.textContent = 'Upload failed';
      c.bar.value = 0;
      c.final.hidden = true;
      note(c.msg, err.message);
      // The page was left meanwhile: say it wherever the user is (unless
      // another key is signed in by now).
      if (gone && job.follower === c && job.key === tag(session.key)) toast(`${job.file.name}: ${err.message}`, 'error');
      return;
    }
    if (left()) return;
    uploadedAt(c, Date.now());
    watch(c, accepted.stem, Date.now());
  }

  /** Polls the video `stem` until it is done or failed (or the page is left). */
  async function watch(c, stem, since) {
    c.li.dataset.stem = stem;
    c.li.dataset.state = 'pending';
    c.stage.textContent = 'Splitting into frames…';
    c.bar.removeAttribute('value'); // indeterminate until the frames are known
    const tiles = new Map();
    let framesRoute = true;
    let errors = 0;
    for (;;) {
      // No polling while the tab is hidden, nor with another key.
      await visible();
      if (left()) return;
      let status;
      let frames = null;
      try {
        status = await api(`/v1/videos/${seg(stem)}`);
        if (framesRoute) {
          try {
            frames = await api(`/v1/videos/${seg(stem)}/frames`);
          } catch (err) {
            if (err.noRoute) framesRoute = false;
            else throw err;
          }
        }
        note(c.msg, null);
        errors = 0;
      } catch (err) {
        if (left()) return;
        if (err.status === 404 && !err.noRoute) {
          // Removed from the stack (or its data folder replaced): forgotten here.
          c.li.dataset.state = 'unknown';
          c.stage.textContent = 'Not on the server';
          c.bar.hidden = true;
          c.final.hidden = true;
          note(c.msg, 'The server no longer knows this video (its data was removed); this tab forgets it.', 'info');
          forget(stem);
          return;
        }
        if (err.status === 401 || err.status === 403) {
          // Asking again will not help: this key may not read the video.
          stopped(c, `This key may not read the video’s progress (${err.message}); stopped asking.`);
          return;
        }
        errors += 1;
        if (Date.now() - since > GIVE_UP_MS && errors >= GIVE_UP_ERRORS) {
          stopped(c, `No result 15 minutes after the upload, and its progress cannot be read (${err.message}); stopped asking. The video may still finish: its result is written to the output bucket.`);
          return;
        }
        note(c.msg, `Cannot read the video’s progress: ${err.message}`);
        await sleep(POLL_MS * 3);
        continue;
      }
      if (left()) return;
      if (frames) drawFrames(frames, c.strip, tiles);
      const total = frames && frames.total;
      const named = frames ? frames.frames.filter((f) => f.names || f.failed).length : status.frames_done;
      if (total) {
        c.bar.max = total;
        c.bar.value = Math.min(named, total);
        c.stage.textContent = `Recognizing frames: ${Math.min(named, total)} of ${total}`;
      }
      if (status.status === 'done') {
        c.li.dataset.state = 'done';
        c.li.dataset.final = status.name || '';
        c.stage.textContent = 'Done';
        c.bar.max = 1;
        c.bar.value = 1;
        const seen = new Map();
        for (const f of frames ? frames.frames : []) for (const n of f.names || []) seen.set(n, (seen.get(n) || 0) + 1);
        fill(c.final,
          h('span', { class: 'hint' }, 'The video’s person: '),
          h('span', { class: 'final-name' }, nameBadge(status.name || 'Unknown')),
          seen.size ? h('span', { class: 'hint seen' }, ` · in frames: ${Array.from(seen, ([n, k]) => `${n} ×${k}`).join(', ')}`) : null);
        return;
      }
      if (status.status === 'failed') {
        c.li.dataset.state = 'failed';
        c.stage.textContent = 'Failed';
        note(c.msg, status.error || 'The video could not be processed.');
        return;
      }
      if (Date.now() - since > GIVE_UP_MS) {
        note(c.msg, 'No result after 15 minutes; the video may still finish: its result is written to the output bucket.', 'info');
        return;
      }
      await sleep(POLL_MS);
    }
  }

  /** Stops following a card's video after an error: `why` says so. */
  function stopped(c, why) {
    c.li.dataset.state = 'stopped';
    c.stage.textContent = 'Not followed';
    c.bar.hidden = true;
    c.final.hidden = true;
    note(c.msg, why);
  }

  // The remembered videos (newest first), then this key's uploads still being sent on top.
  for (const v of remembered()) {
    const c = card(v.file);
    list.append(c.li);
    uploadedAt(c, v.at);
    watch(c, v.stem, v.at);
  }
  for (const job of sending) if (job.key === mine) follow(job);

  dropZone(zone, (files) => {
    note(msg, null);
    for (const f of files) follow(send(f));
  }, isVideo);

  return () => {
    gone = true;
  };
}

function drawFrames(frames, strip, tiles) {
  for (const f of frames.frames) {
    let t = tiles.get(f.index);
    if (!t) {
      const img = h('img', { alt: `Frame ${f.index + 1}`, decoding: 'async' });
      const caption = h('figcaption', { class: 'frame-names' }, '…');
      t = { li: h('li', { class: 'frame', dataset: { index: String(f.index) } }, h('figure', {}, h('div', { class: 'frame-box' }, img), caption)), caption, state: '' };
      tiles.set(f.index, t);
      imageUrl(f.image).then((u) => { img.src = u; }, () => t.li.classList.add('missing'));
      // Keep frame order whatever order they arrive in.
      const after = Array.from(strip.children).find((li) => Number(li.dataset.index) > f.index);
      strip.insertBefore(t.li, after || null);
    }
    const state = f.failed ? 'failed' : f.names ? f.names.join('\n') : '';
    if (state === t.state) continue;
    t.state = state;
    if (f.failed) {
      fill(t.caption, h('span', { class: 'badge badge-error' }, 'failed'));
    } else if (f.names) {
      fill(t.caption, f.names.length ? f.names.map(nameBadge) : nameBadge('NoFace'));
      t.li.dataset.names = f.names.join(',');
    }
  }
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves once the page is visible (at once if it is). */
function visible() {
  if (!document.hidden) return Promise.resolve();
  return new Promise((r) => {
    const on = () => {
      if (document.hidden) return;
      document.removeEventListener('visibilitychange', on);
      r();
    };
    document.addEventListener('visibilitychange', on);
  });
}
