// Video: upload a video, watch it being split and recognized, see its
// frames as a strip with the names found in each, and the final name.

import { api, upload, imageUrl, seg } from './api.js';
import { h, fill, note, dropZone } from './dom.js';

const isVideo = (f) => /^video\//.test(f.type) || /\.(mp4|m4v|mov|3gp|mkv|webm|avi)$/i.test(f.name);
const POLL_MS = 1000;
const GIVE_UP_MS = 15 * 60 * 1000;

function nameBadge(n) {
  if (n === 'Unknown') return h('span', { class: 'badge badge-unknown' }, 'Unknown');
  if (n === 'NoFace') return h('span', { class: 'badge badge-noface' }, 'No face');
  return h('span', { class: 'badge badge-known' }, n);
}

export function mount(main) {
  let gone = false;
  const input = h('input', { id: 'video-file', type: 'file', accept: 'video/*,.mp4,.mov,.mkv,.webm,.avi', class: 'sr-only' });
  const zone = h('label', { class: 'drop', for: 'video-file' }, input,
    h('span', { class: 'drop-title' }, 'Drop a video here'),
    h('span', { class: 'hint' }, 'or ', h('span', { class: 'link' }, 'choose a file'), ' (MP4/MOV, Matroska/WebM, AVI)'));
  const msg = h('div', { class: 'note' });
  const list = h('ol', { class: 'videos', id: 'videos', 'aria-label': 'Uploaded videos' });
  main.append(h('section', { class: 'page', 'aria-labelledby': 'vid-h' },
    h('div', { class: 'page-head' }, h('h1', { id: 'vid-h' }, 'Video')),
    h('p', { class: 'hint' }, 'A video is stored, split into frames with ffmpeg, and each frame is recognized; the video’s person is the name found most often. Enroll its person in the Gallery first.'),
    zone, msg, list));

  async function one(file) {
    const stage = h('span', { class: 'video-stage', role: 'status' }, 'Uploading…');
    const bar = h('progress', { max: 100, value: 0, 'aria-label': `Progress of ${file.name}` });
    const final = h('div', { class: 'video-final' }, h('span', { class: 'hint' }, 'Result: '), h('span', { class: 'final-name hint' }, 'waiting'));
    const strip = h('ol', { class: 'frames', 'aria-label': `Frames of ${file.name}` });
    const cardMsg = h('div', { class: 'note' });
    const card = h('li', { class: 'card video', dataset: { file: file.name, state: 'uploading' } },
      h('div', { class: 'video-head' }, h('h2', { class: 'video-name' }, file.name), stage),
      bar, final, strip, cardMsg);
    list.prepend(card);

    let accepted;
    try {
      const form = new FormData();
      form.append('video', file, file.name);
      accepted = await upload('/v1/videos', form, (f) => {
        bar.value = Math.round(f * 100);
        stage.textContent = `Uploading ${Math.round(f * 100)} %`;
      });
    } catch (err) {
      card.dataset.state = 'failed';
      stage.textContent = 'Upload failed';
      bar.value = 0;
      final.hidden = true;
      note(cardMsg, err.message);
      return;
    }
    card.dataset.stem = accepted.stem;
    card.dataset.state = 'pending';
    stage.textContent = 'Splitting into frames…';
    bar.removeAttribute('value'); // indeterminate until the frames are known

    const tiles = new Map();
    let framesRoute = true;
    const started = Date.now();
    for (;;) {
      if (gone) return;
      if (Date.now() - started > GIVE_UP_MS) {
        note(cardMsg, 'No result after 15 minutes; the video may still finish: its result is written to the output bucket.', 'info');
        return;
      }
      // No polling while the tab is hidden.
      await visible();
      if (gone) return;
      let status;
      let frames = null;
      try {
        status = await api(`/v1/videos/${seg(accepted.stem)}`);
        if (framesRoute) {
          try {
            frames = await api(`/v1/videos/${seg(accepted.stem)}/frames`);
          } catch (err) {
            if (err.noRoute) framesRoute = false;
            else throw err;
          }
        }
        note(cardMsg, null);
      } catch (err) {
        note(cardMsg, `Cannot read the video’s progress: ${err.message}`);
        await sleep(POLL_MS * 3);
        continue;
      }
      if (frames) drawFrames(frames, strip, tiles);
      const total = frames && frames.total;
      const named = frames ? frames.frames.filter((f) => f.names || f.failed).length : status.frames_done;
      if (total) {
        bar.max = total;
        bar.value = Math.min(named, total);
        stage.textContent = `Recognizing frames: ${Math.min(named, total)} of ${total}`;
      }
      if (status.status === 'done') {
        card.dataset.state = 'done';
        card.dataset.final = status.name || '';
        stage.textContent = 'Done';
        bar.max = 1;
        bar.value = 1;
        const seen = new Map();
        for (const f of frames ? frames.frames : []) for (const n of f.names || []) seen.set(n, (seen.get(n) || 0) + 1);
        fill(final,
          h('span', { class: 'hint' }, 'The video’s person: '),
          h('span', { class: 'final-name' }, nameBadge(status.name || 'Unknown')),
          seen.size ? h('span', { class: 'hint seen' }, ` · in frames: ${Array.from(seen, ([n, c]) => `${n} ×${c}`).join(', ')}`) : null);
        return;
      }
      if (status.status === 'failed') {
        card.dataset.state = 'failed';
        stage.textContent = 'Failed';
        note(cardMsg, status.error || 'The video could not be processed.');
        return;
      }
      await sleep(POLL_MS);
    }
  }

  dropZone(zone, (files) => {
    note(msg, null);
    for (const f of files) one(f);
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
