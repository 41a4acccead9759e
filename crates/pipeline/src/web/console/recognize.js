// Recognize: drop or pick photos; each is sent to the fleet and shown with
// its faces boxed and named, the top candidates, and the time it took. The
// collection is in the address (#/recognize?collection=x), as on the Gallery;
// a photo goes to the collection chosen when it was dropped, and says which.

import { api, seg } from './api.js';
import { h, s, fill, note, ms, sim, dropZone, pool, showCollection, isCollectionName } from './dom.js';

const isImage = (f) => /^image\//.test(f.type) || /\.(jpe?g|png|webp|bmp)$/i.test(f.name);

/** The collections the key can see, or ['default'] on a server without them. */
export async function collectionNames() {
  try {
    const r = await api('/v1/collections');
    const names = (r.collections || []).map((c) => c.name);
    return names.length ? names : ['default'];
  } catch (err) {
    if (err.noRoute) return ['default'];
    throw err;
  }
}

function badge(name) {
  if (name === 'NoFace') return h('span', { class: 'badge badge-noface' }, 'No face');
  if (name === 'Unknown' || name === null || name === undefined) return h('span', { class: 'badge badge-unknown' }, 'Unknown');
  return h('span', { class: 'badge badge-known' }, name);
}

/** Boxes and names over the photo, in image pixels. */
function overlay(svg, width, height, faces) {
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  const font = Math.max(width, height) / 14;
  fill(svg, faces.map((f, i) => {
    const b = f.box;
    const known = f.name !== null && f.name !== undefined;
    const label = `${i + 1} ${known ? f.name : 'Unknown'}`;
    const above = b.y1 - font * 0.3 > font;
    return s('g', { class: known ? 'face face-known' : 'face face-unknown' },
      s('rect', { x: b.x1, y: b.y1, width: Math.max(1, b.x2 - b.x1), height: Math.max(1, b.y2 - b.y1), 'vector-effect': 'non-scaling-stroke' }),
      s('text', { x: Math.max(0, b.x1), y: above ? b.y1 - font * 0.3 : b.y1 + font, 'font-size': font.toFixed(1), class: 'face-label' }, label));
  }));
}

function faceRow(f, i) {
  const known = f.name !== null && f.name !== undefined;
  const cands = (f.candidates || []).map((c) => h('li', {}, h('span', { class: 'cand-name' }, c.person), ' ', h('span', { class: 'num' }, sim(c.similarity))));
  return h('li', { class: 'face-row' },
    h('div', { class: 'face-head' },
      h('span', { class: 'face-no', 'aria-hidden': 'true' }, String(i + 1)),
      h('span', { class: 'sr-only' }, `Face ${i + 1}: `),
      badge(known ? f.name : 'Unknown'),
      h('span', { class: 'num', title: 'cosine similarity with the best match' }, `similarity ${sim(f.similarity)}`)),
    cands.length ? h('div', { class: 'cands' }, h('span', { class: 'hint' }, 'Top candidates:'), h('ol', {}, cands)) : null);
}

export function mount(main, ctx, query) {
  let gone = false;
  const select = h('select', { id: 'rec-collection' }, h('option', { value: 'default' }, 'default'));
  const limit = h('input', { id: 'rec-limit', type: 'number', min: 1, max: 10, value: '3', inputmode: 'numeric' });
  const input = h('input', { id: 'rec-files', type: 'file', accept: 'image/*', multiple: true, class: 'sr-only' });
  const zone = h('label', { class: 'drop', for: 'rec-files' },
    input,
    h('span', { class: 'drop-title' }, 'Drop photos here'),
    h('span', { class: 'hint' }, 'or ', h('span', { class: 'link' }, 'choose files'), ' (JPEG, PNG, WebP, BMP)'));
  const msg = h('div', { class: 'note' });
  const results = h('ol', { class: 'results', id: 'rec-results', 'aria-label': 'Recognized photos' });
  const clear = h('button', { type: 'button', class: 'secondary small' }, 'Clear results');
  const urls = new Set();
  clear.addEventListener('click', () => {
    for (const u of urls) URL.revokeObjectURL(u);
    urls.clear();
    results.replaceChildren();
  });

  main.append(h('section', { class: 'page', 'aria-labelledby': 'rec-h' },
    h('div', { class: 'page-head' }, h('h1', { id: 'rec-h' }, 'Recognize'), clear),
    h('p', { class: 'hint' }, 'Each photo goes through the queue to a worker, like any client’s. Boxes show the faces found, largest first.'),
    h('div', { class: 'controls' },
      h('div', { class: 'field' }, h('label', { for: 'rec-collection' }, 'Collection'), select),
      h('div', { class: 'field' }, h('label', { for: 'rec-limit' }, 'Candidates per face'), limit)),
    zone, msg, results));

  let names = null;
  let current = null; // the collection chosen (null while the first choice lists them)
  let choices = 0;
  /** Shows collection `want` (listing them again when it is not known); `asked`: the address named it. */
  async function choose(want, asked) {
    const ticket = ++choices;
    // A name that cannot be a collection's is not listed again: it falls back.
    if (!names || (!names.includes(want) && isCollectionName(want))) {
      const listed = await collectionNames();
      // Only the latest choice is shown (Back pressed while listing).
      if (gone || ticket !== choices) return;
      names = listed;
      fill(select, names.map((n) => h('option', { value: n }, n)));
    }
    let c = want;
    if (!names.includes(c)) {
      c = names.includes('default') ? 'default' : names[0];
      if (asked) note(msg, `No collection “${want}” that this key can use: showing ${c}.`, 'info');
    }
    select.value = c;
    current = c;
    ctx.collection = c;
    // The page's own choice replaces the address (no history entry).
    showCollection('recognize', c, false);
  }
  const listFailed = (err) => note(msg, `Cannot list the collections: ${err.message}`);
  const asked = query.get('collection');
  choose(asked || ctx.collection || 'default', Boolean(asked)).catch(listFailed);

  // A pick is a history entry: Back returns to the previous collection.
  select.addEventListener('change', () => {
    note(msg, null);
    current = select.value;
    ctx.collection = current;
    showCollection('recognize', select.value, true);
  });

  /** Recognizes `file` in collection `c`. */
  async function one(file, c) {
    const url = URL.createObjectURL(file);
    urls.add(url);
    const img = h('img', { src: url, alt: `Photo ${file.name}` });
    const svg = s('svg', { class: 'boxes', 'aria-hidden': 'true', viewBox: '0 0 1 1' });
    const status = h('p', { class: 'rec-status', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Recognizing…');
    const details = h('div', { class: 'rec-details' }, status);
    const card = h('li', { class: 'card rec-card', dataset: { file: file.name, state: 'pending', collection: c } },
      h('figure', { class: 'photo' }, h('div', { class: 'photo-box' }, img, svg), h('figcaption', { class: 'file-name' }, file.name)),
      details);
    results.append(card);
    const loaded = new Promise((res) => {
      if (img.complete && img.naturalWidth) res();
      else {
        img.addEventListener('load', res, { once: true });
        img.addEventListener('error', res, { once: true });
      }
    });
    const form = new FormData();
    form.append('image', file, file.name);
    const n = Math.min(10, Math.max(1, parseInt(limit.value, 10) || 3));
    const path = c === 'default' ? `/v1/recognize?limit=${n}` : `/v1/collections/${seg(c)}/recognize?limit=${n}`;
    let started = performance.now();
    // Over the key's rate: sent again after the wait (the server did not
    // take it), which the time taken leaves out.
    const onWait = (secs) => {
      card.dataset.waits = String(Number(card.dataset.waits || 0) + 1);
      fill(status, h('span', { class: 'spinner', 'aria-hidden': 'true' }), `Rate limited, retrying in ${secs} s…`);
      started = performance.now() + secs * 1000;
      setTimeout(() => fill(status, h('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Recognizing…'), secs * 1000);
    };
    try {
      const r = await api(path, { method: 'POST', form, onWait });
      const took = performance.now() - started;
      await loaded;
      const faces = r.faces || [];
      if (img.naturalWidth) overlay(svg, img.naturalWidth, img.naturalHeight, faces);
      card.dataset.state = 'done';
      card.dataset.name = r.name;
      const server = typeof r.took_ms === 'number' ? ` (server ${ms(r.took_ms)})` : '';
      fill(details,
        h('p', { class: 'rec-answer' }, h('span', { class: 'rec-name' }, badge(r.name)),
          h('span', { class: 'hint' }, `${faces.length} face${faces.length === 1 ? '' : 's'} in ${c} · ${ms(took)}${server}`)),
        faces.length
          ? h('ol', { class: 'faces', 'aria-label': `Faces in ${file.name}` }, faces.map(faceRow))
          : h('p', { class: 'hint' }, 'No face was found in this photo.'));
    } catch (err) {
      card.dataset.state = 'error';
      fill(details, h('p', { class: 'note note-error', role: 'alert' }, `${file.name}: ${err.message}`));
    }
  }

  dropZone(zone, (files) => {
    note(msg, null);
    // The collection as the photos are dropped: a switch meanwhile (Back)
    // does not move the ones still waiting for their turn.
    const c = select.value || 'default';
    pool(files, 4, (f) => one(f, c));
  }, isImage);

  return {
    // The address changed while the page is shown (Back, Forward).
    onRoute: (q) => {
      const want = q.get('collection');
      if (!want) {
        // This page's own link: keep the collection (a choice under way sets it).
        if (current) showCollection('recognize', current, false);
        return;
      }
      if (want === current) return;
      note(msg, null);
      choose(want, true).catch(listFailed);
    },
    unmount: () => {
      gone = true;
      for (const u of urls) URL.revokeObjectURL(u);
    },
  };
}
