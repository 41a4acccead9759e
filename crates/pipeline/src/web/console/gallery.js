// Gallery: collections → people (a thumbnail per face, face counts),
// search, enroll by dropping photos on a person or a new name, delete a
// face or a person (with a confirmation). The collection shown is in the
// address (#/gallery?collection=x): a pick adds a history entry, Back and
// Forward switch in place (an action under way keeps the collection it
// started in). On a server without the collection routes it
// falls back to /v1/people (the default collection, no thumbnails).

import { api, idempotencyKey, imageUrl, forgetImages, seg } from './api.js';
import { h, fill, note, toast, confirmDialog, dropZone, showCollection, isCollectionName } from './dom.js';

/** Most photos one enrollment request takes (the server's MAX_ENROLL_PHOTOS). */
const MAX_PHOTOS = 20;
/** Most bytes of photos per enrollment request: under the server's default 10 MiB body limit. */
const MAX_BATCH_BYTES = 8 * 1024 * 1024;

/** `files` in requests of at most MAX_PHOTOS photos and MAX_BATCH_BYTES (a bigger photo goes alone). */
function batches(files) {
  const out = [];
  let cur = [];
  let bytes = 0;
  for (const f of files) {
    if (cur.length && (cur.length === MAX_PHOTOS || bytes + f.size > MAX_BATCH_BYTES)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(f);
    bytes += f.size;
  }
  if (cur.length) out.push(cur);
  return out;
}
const isImage = (f) => /^image\//.test(f.type) || /\.(jpe?g|png|webp|bmp)$/i.test(f.name);
const MAX_THUMBS = 12;
/** People shown at once; "Show more" adds as many again. */
const PAGE = 48;

function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

export function mount(main, ctx, query) {
  // The collection the address asks for (a missing one gets a note; one
  // that cannot be a collection's name is never used, only noted).
  let asked = query.get('collection');
  let malformed = asked && !isCollectionName(asked) ? asked : null;
  if (malformed) asked = null;
  const state = { legacy: false, collections: [], current: asked || ctx.collection || 'default', people: [], details: new Map(), gone: false, loads: 0, limit: PAGE };
  const msg = h('div', { class: 'note' });
  const colList = h('ul', { class: 'collection-list', 'aria-label': 'Collections' });
  const newCol = h('input', { id: 'new-collection', type: 'text', autocomplete: 'off', spellcheck: 'false', pattern: '[a-z0-9][a-z0-9_\\-]{0,63}', 'aria-describedby': 'new-collection-help' });
  const colForm = h('form', { class: 'new-collection' },
    h('label', { for: 'new-collection' }, 'New collection'),
    h('div', { class: 'inline' }, newCol, h('button', { type: 'submit', class: 'small' }, 'Create')),
    h('p', { id: 'new-collection-help', class: 'hint' }, 'Lower-case letters, digits, - and _.'));
  const search = h('input', { id: 'people-search', type: 'search', autocomplete: 'off', spellcheck: 'false', placeholder: 'Name…' });
  const count = h('p', { class: 'hint people-count', 'aria-live': 'polite' });
  const heading = h('h2', { id: 'people-h' }, 'People');
  const newName = h('input', { id: 'enroll-name', type: 'text', autocomplete: 'off', spellcheck: 'false', maxlength: 100 });
  const newFiles = h('input', { id: 'enroll-files', type: 'file', accept: 'image/*', multiple: true, class: 'sr-only' });
  const newMsg = h('div', { class: 'note' });
  const newZone = h('label', { class: 'drop', for: 'enroll-files' }, newFiles,
    h('span', { class: 'drop-title' }, 'Drop photos of them here'),
    h('span', { class: 'hint' }, 'or ', h('span', { class: 'link' }, 'choose files'), '; every photo must show the person’s face'));
  const enrollNew = h('div', { class: 'card enroll-new' },
    h('h3', {}, 'Enroll someone new'),
    h('div', { class: 'field' }, h('label', { for: 'enroll-name' }, 'Name'), newName),
    newZone, newMsg);
  const list = h('ul', { class: 'people', 'aria-labelledby': 'people-h', id: 'people' });
  // Creating collections needs the admin scope.
  colForm.hidden = !ctx.admin;

  main.append(h('section', { class: 'page', 'aria-labelledby': 'gal-h' },
    h('div', { class: 'page-head' }, h('h1', { id: 'gal-h' }, 'Gallery')),
    msg,
    h('div', { class: 'gallery' },
      h('aside', { class: 'card collections', 'aria-labelledby': 'col-h' }, h('h2', { id: 'col-h' }, 'Collections'), colList, colForm),
      h('div', { class: 'people-pane' },
        h('div', { class: 'page-head' }, heading,
          h('div', { class: 'field search' }, h('label', { for: 'people-search' }, 'Search people'), search)),
        count, enrollNew, list))));

  // Paths in collection `c`: an action takes the collection shown when it
  // starts and keeps it (Back may switch the page while it waits).
  const base = (c) => `/v1/collections/${seg(c)}`;
  const peoplePath = (c) => (state.legacy ? '/v1/people' : `${base(c)}/people`);
  const personPath = (c, name) => (state.legacy ? `/v1/people/${seg(name)}` : `${base(c)}/people/${seg(name)}`);

  /**
   * After a confirmation asked in collection `c` about `what`: whether the
   * page still shows it; if not, nothing is done and a note says so.
   */
  function stillShown(c, what) {
    if (!state.gone && state.current === c) return true;
    const text = `Nothing deleted: the page ${state.gone ? 'was left' : `switched to ${state.current}`} while asking about ${what} in ${c}.`;
    if (state.gone) toast(text);
    else note(msg, text, 'info');
    return false;
  }

  // Thumbnails load when a card scrolls into view.
  const seen = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting) {
        seen.unobserve(e.target);
        loadFaces(e.target);
      }
    }
  }, { rootMargin: '200px' });

  async function loadCollections() {
    try {
      const r = await api('/v1/collections');
      // Only what the server lists: a key limited to some collections does
      // not see `default`.
      state.collections = r.collections || [];
    } catch (err) {
      if (!err.noRoute) throw err;
      state.legacy = true;
      state.collections = [{ name: 'default' }];
      colForm.hidden = true;
    }
    if (!state.collections.some((c) => c.name === state.current)) {
      const fallback = state.collections.some((c) => c.name === 'default') ? 'default' : (state.collections[0] || { name: 'default' }).name;
      if (state.current === asked) note(msg, `No collection “${asked}” that this key can use: showing ${fallback}.`, 'info');
      select(fallback);
    }
    if (malformed) {
      note(msg, `No collection “${malformed}” that this key can use: showing ${state.current}.`, 'info');
      malformed = null;
    }
    ctx.collection = state.current;
    renderCollections();
    // The page's own choice replaces the address (no history entry).
    if (!state.gone) showCollection('gallery', state.current, false);
  }

  /** Makes `name` the collection shown (its people load next); false when it already is. */
  function select(name) {
    ctx.collection = name;
    if (state.current === name) return false;
    state.current = name;
    state.details.clear();
    search.value = '';
    state.limit = PAGE;
    return true;
  }

  /** The address changed while the page is shown (Back, Forward, a link). */
  function onRoute(q) {
    const want = q.get('collection');
    if (!want) {
      showCollection('gallery', state.current, false);
      return;
    }
    if (!isCollectionName(want)) {
      note(msg, `No collection “${want}” that this key can use: showing ${state.current}.`, 'info');
      showCollection('gallery', state.current, false);
      return;
    }
    asked = want;
    if (!select(want)) return;
    note(msg, null);
    if (state.collections.some((c) => c.name === want)) {
      renderCollections();
      loadPeople().catch(showError);
    } else {
      refresh().catch(showError); // lists again: created meanwhile, or gone
    }
  }

  function renderCollections() {
    fill(colList, state.collections.map((c) => {
      const current = c.name === state.current;
      const pick = h('button', { type: 'button', class: 'collection', 'aria-pressed': current ? 'true' : 'false' },
        h('span', { class: 'collection-name' }, c.name),
        typeof c.people === 'number' ? h('span', { class: 'hint' }, `${plural(c.people, 'person', 'people')} · ${plural(c.faces, 'face')}`) : null);
      pick.addEventListener('click', () => {
        if (!select(c.name)) return;
        note(msg, null);
        showCollection('gallery', c.name, true);
        renderCollections();
        loadPeople().catch(showError);
      });
      const del = ctx.admin && !state.legacy && c.name !== 'default'
        ? h('button', { type: 'button', class: 'icon danger-text', 'aria-label': `Delete collection ${c.name}`, title: 'Delete collection' }, '×')
        : null;
      if (del) {
        del.addEventListener('click', async () => {
          const ok = await confirmDialog(`Delete collection “${c.name}”?`,
            `Its ${plural(c.people || 0, 'person', 'people')} and ${plural(c.faces || 0, 'face')} are deleted for good.`, 'Delete collection');
          if (!ok) return;
          try {
            await api(`/v1/collections/${seg(c.name)}`, { method: 'DELETE' });
            toast(`Deleted collection ${c.name}.`);
            if (state.current === c.name) select('default');
            await refresh();
          } catch (err) {
            showError(err);
          }
        });
      }
      return h('li', { class: current ? 'current' : '', dataset: { collection: c.name } }, pick, del);
    }));
  }

  async function loadPeople() {
    // Every collection switch loads again: only the latest load's answer
    // is shown (an earlier one may be for another collection).
    const ticket = ++state.loads;
    const r = await api(peoplePath(state.current));
    if (state.gone || ticket !== state.loads) return;
    state.people = (r.people || []).slice().sort((a, b) => a.name.localeCompare(b.name));
    renderPeople();
  }

  function renderPeople() {
    heading.textContent = `People in ${state.current}`;
    list.dataset.collection = state.current;
    const q = search.value.trim().toLowerCase();
    const shown = state.people.filter((p) => !q || p.name.toLowerCase().includes(q));
    const faces = state.people.reduce((n, p) => n + p.faces, 0);
    count.textContent = q
      ? `${shown.length} of ${plural(state.people.length, 'person', 'people')} match “${search.value.trim()}”.`
      : `${plural(state.people.length, 'person', 'people')}, ${plural(faces, 'face')}.`;
    seen.disconnect();
    if (!shown.length) {
      fill(list, h('li', { class: 'empty hint' }, state.people.length ? 'Nobody matches.' : 'Nobody is enrolled in this collection yet.'));
      return;
    }
    // A page of people at a time: a large collection stays light (cards,
    // and the requests for their faces).
    const cards = shown.slice(0, state.limit).map(personCard);
    const rest = shown.length - cards.length;
    if (rest > 0) {
      const more = h('button', { type: 'button', class: 'secondary show-more' }, `Show ${Math.min(rest, PAGE)} more (${rest} not shown)`);
      more.addEventListener('click', () => {
        const first = cards.length;
        state.limit += PAGE;
        renderPeople();
        // Keep the keyboard where the new cards start.
        list.children[first]?.querySelector('h3')?.setAttribute('tabindex', '-1');
        list.children[first]?.querySelector('h3')?.focus();
      });
      cards.push(h('li', { class: 'more-people' }, more));
    }
    fill(list, cards);
  }

  function personCard(p) {
    const thumbs = h('ul', { class: 'thumbs', 'aria-label': `Faces of ${p.name}` },
      Array.from({ length: Math.min(p.faces, MAX_THUMBS) }, () => h('li', { class: 'thumb placeholder', 'aria-hidden': 'true' })));
    // Deletes need the admin scope: other keys do not see them.
    const del = h('button', { type: 'button', class: 'danger small', 'aria-label': `Delete ${p.name}`, hidden: !ctx.admin }, 'Delete');
    const drawnFor = state.current;
    // The label wraps its input: no id needed (names do not make unique ids).
    const files = h('input', { type: 'file', accept: 'image/*', multiple: true, class: 'sr-only', 'aria-label': `Add photos of ${p.name}` });
    const zone = h('label', { class: 'drop drop-small' }, files,
      h('span', {}, 'Drop photos to add, or ', h('span', { class: 'link' }, 'choose files')));
    const cardMsg = h('div', { class: 'note' });
    const card = h('li', { class: 'card person', dataset: { name: p.name, faces: String(p.faces) } },
      h('div', { class: 'person-head' },
        h('h3', { class: 'person-name' }, p.name),
        h('span', { class: 'hint face-count' }, plural(p.faces, 'face')),
        del),
      thumbs, zone, cardMsg);
    card._person = p;
    del.addEventListener('click', async () => {
      const c = drawnFor;
      if (c !== state.current) return; // a card of a collection no longer shown
      const ok = await confirmDialog(`Delete ${p.name}?`, `All ${plural(p.faces, 'enrolled face')} of ${p.name} in ${c} are deleted for good.`, 'Delete person');
      if (!ok || !stillShown(c, p.name)) return;
      try {
        const r = await api(personPath(c, p.name), { method: 'DELETE' });
        toast(`Deleted ${p.name} from ${c} (${plural(r.removed ?? p.faces, 'face')}).`);
        if (state.current === c) state.details.delete(p.name);
        forgetImages(`${base(c)}/faces/`);
        await refresh();
        focusList();
      } catch (err) {
        note(cardMsg, err.message);
      }
    });
    dropZone(card, (f) => {
      if (drawnFor === state.current) enroll(drawnFor, p.name, f, cardMsg);
    }, isImage);
    seen.observe(card);
    return card;
  }

  async function loadFaces(card) {
    const p = card._person;
    const thumbs = card.querySelector('.thumbs');
    if (state.legacy) {
      fill(thumbs, Array.from({ length: Math.min(p.faces, MAX_THUMBS) }, (_, i) =>
        h('li', { class: 'thumb initial', title: `Face ${i + 1}` }, h('span', { 'aria-hidden': 'true' }, p.name.slice(0, 1).toUpperCase()), h('span', { class: 'sr-only' }, `Face ${i + 1} of ${p.name}`))));
      return;
    }
    let detail = state.details.get(p.name);
    const current = state.current;
    try {
      if (!detail) {
        detail = await api(personPath(current, p.name));
        // Another collection was picked meanwhile: this card is gone.
        if (current !== state.current) return;
        state.details.set(p.name, detail);
      }
    } catch (err) {
      note(card.querySelector('.note'), `Cannot load the faces: ${err.message}`);
      return;
    }
    const faces = detail.faces || [];
    const items = faces.slice(0, MAX_THUMBS).map((f, i) => thumb(current, p.name, f, i));
    if (faces.length > MAX_THUMBS) items.push(h('li', { class: 'thumb more' }, `+${faces.length - MAX_THUMBS}`));
    fill(thumbs, items);
  }

  /** A face `f` of `name` in collection `c`. */
  function thumb(c, name, f, i) {
    const img = h('img', { alt: `Face ${i + 1} of ${name}`, width: 64, height: 64, decoding: 'async' });
    const del = h('button', { type: 'button', class: 'thumb-del', 'aria-label': `Delete face ${i + 1} of ${name}`, title: 'Delete this face', hidden: !ctx.admin }, '×');
    const li = h('li', { class: 'thumb', dataset: { face: f.id } }, img, del);
    if (f.thumbnail) {
      imageUrl(f.thumbnail).then((u) => { img.src = u; }, () => li.classList.add('missing'));
    } else {
      li.classList.add('missing');
    }
    del.addEventListener('click', async () => {
      const ok = await confirmDialog(`Delete this face of ${name}?`, `The photo’s embedding is removed from ${c}; the person stays if other faces remain.`, 'Delete face');
      if (!ok || !stillShown(c, `a face of ${name}`)) return;
      try {
        await api(`${base(c)}/faces/${seg(f.id)}`, { method: 'DELETE' });
        toast(`Deleted a face of ${name} in ${c}.`);
        if (state.current === c) state.details.delete(name);
        await refresh();
        focusList(name);
      } catch (err) {
        showError(err);
      }
    });
    return li;
  }

  /** Enrolls `files` as `name` in collection `c`, every batch there (whatever the page shows meanwhile). */
  async function enroll(c, name, files, where) {
    name = name.trim();
    if (!name) {
      note(where, 'Enter the person’s name first, then add photos.');
      newName.focus();
      return;
    }
    note(where, `Enrolling ${plural(files.length, 'photo')} of ${name} in ${c}…`, 'info');
    let added = 0;
    try {
      let r;
      for (const batch of batches(Array.from(files))) {
        const form = new FormData();
        for (const f of batch) form.append('image', f, f.name);
        // One key per batch: a batch sent again (busy server, lost answer)
        // is enrolled once.
        r = await api(`${personPath(c, name)}/faces`, { method: 'POST', form, once: idempotencyKey() });
        added += r.added;
      }
      note(where, `Enrolled ${plural(added, 'photo')} of ${r.name} in ${c}; ${plural(r.faces, 'face')} in all.`, 'ok');
    } catch (err) {
      note(where, added ? `${err.message} (${plural(added, 'photo')} were enrolled before this error.)` : err.message);
    }
    if (added) {
      if (state.current === c) state.details.delete(name);
      await refresh();
    }
  }

  async function refresh() {
    await loadCollections();
    await loadPeople();
  }

  /** After a delete: focus the card of `name` if it is still there, else the list's heading. */
  function focusList(name) {
    const card = name && Array.from(list.children).find((li) => li.dataset.name === name);
    const target = card ? card.querySelector('button') : heading;
    if (target === heading) heading.setAttribute('tabindex', '-1');
    target.focus();
  }

  function showError(err) {
    note(msg, err.message);
  }

  colForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = newCol.value.trim();
    if (!name) return;
    try {
      await api('/v1/collections', { method: 'POST', json: { name } });
      newCol.value = '';
      select(name);
      showCollection('gallery', name, true);
      toast(`Created collection ${name}.`);
      await refresh();
    } catch (err) {
      showError(err);
    }
  });
  search.addEventListener('input', () => {
    state.limit = PAGE;
    renderPeople();
  });
  dropZone(newZone, (files) => enroll(state.current, newName.value, files, newMsg), isImage);
  newName.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      newFiles.click();
    }
  });

  refresh().catch(showError);
  return {
    onRoute,
    unmount: () => {
      state.gone = true;
      seen.disconnect();
    },
  };
}

