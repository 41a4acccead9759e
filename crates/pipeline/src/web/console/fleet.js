// Fleet: the last ten minutes of the stack, refreshed every second from
// GET /v1/status/history, and the workers with their state.

import { api } from './api.js';
import { h, fill, note } from './dom.js';
import { lineChart } from './chart.js';

const REFRESH_MS = 1000;

export function mount(main, ctx) {
  const msg = h('div', { class: 'note' });
  const charts = [
    lineChart({ id: 'chart-instances', title: 'Instances', series: [
      { key: 'instances', label: 'pending + running', cls: 's1' },
      { key: 'running', label: 'running', cls: 's2' },
    ] }),
    lineChart({ id: 'chart-queue', title: 'Request queue', series: [
      { key: 'queue_depth', label: 'waiting', cls: 's1' },
      { key: 'working', label: 'being worked on', cls: 's2' },
    ] }),
    lineChart({ id: 'chart-inflight', title: 'In flight in this web tier', series: [
      { key: 'in_flight', label: 'requests', cls: 's1' },
    ] }),
    lineChart({ id: 'chart-throughput', title: 'Throughput', unit: '/s', series: [
      { key: 'completed_per_s', label: 'answered', cls: 's1' },
    ] }),
    lineChart({ id: 'chart-latency', title: 'Latency', unit: 'ms', series: [
      { key: 'p50_ms', label: 'p50', cls: 's1' },
      { key: 'p95_ms', label: 'p95', cls: 's2' },
    ] }),
  ];
  const workersBody = h('tbody', {});
  const workersCaption = h('caption', {}, 'Workers');
  const table = h('table', { class: 'workers', id: 'workers' }, workersCaption,
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Worker'), h('th', { scope: 'col' }, 'State'))), workersBody);
  const stack = h('dl', { class: 'stack' });
  const updated = h('p', { class: 'hint updated' }, ' ');
  let windowMs = 10 * 60 * 1000;
  let samples = [];
  const spans = [['60000', 'Last minute'], ['600000', 'Last 10 minutes']];
  const picker = h('fieldset', { class: 'span-picker' }, h('legend', { class: 'sr-only' }, 'Time shown'),
    spans.map(([v, label]) => h('label', {},
      h('input', { type: 'radio', name: 'span', value: v, checked: Number(v) === windowMs, id: `span-${v}` }), ` ${label}`)));
  picker.addEventListener('change', (e) => {
    windowMs = Number(e.target.value);
    for (const c of charts) c.update(samples, windowMs);
  });

  main.append(h('section', { class: 'page', 'aria-labelledby': 'fleet-h' },
    h('div', { class: 'page-head' }, h('h1', { id: 'fleet-h' }, 'Fleet'), picker, updated),
    msg,
    h('div', { class: 'fleet' },
      h('div', { class: 'charts' }, charts.map((c) => c.el)),
      h('div', { class: 'side' },
        h('div', { class: 'card table-card' }, table),
        h('details', { class: 'card' }, h('summary', {}, 'This stack'), stack)))));

  api('/v1/status?objects=false').then((st) => {
    const facts = Object.entries(st.stack || {});
    fill(stack, facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }).catch(() => {});

  let timer = null;
  let busy = false;
  let stopped = false;

  async function tick() {
    if (busy || stopped || document.hidden) return;
    busy = true;
    try {
      const r = await api('/v1/status/history');
      if (stopped) return;
      note(msg, null);
      updated.classList.remove('stale');
      samples = r.samples || [];
      for (const c of charts) c.update(samples, windowMs);
      drawWorkers(r);
      const last = samples[samples.length - 1];
      updated.textContent = last ? `Updated ${new Date(last.t_ms).toLocaleTimeString()}` : 'Waiting for the first sample…';
    } catch (err) {
      if (err.status === 403) {
        // Not for this key: stop asking (each try would spend its rate limit).
        stopped = true;
        clearInterval(timer);
        note(msg, 'The Fleet page needs an API key with the admin scope.');
      } else if (err.noRoute) {
        note(msg, 'This facefleet server keeps no status history (GET /v1/status/history is missing).');
      } else {
        note(msg, `Cannot read the fleet’s history: ${err.message}`);
        updated.classList.add('stale');
      }
    } finally {
      busy = false;
    }
  }

  function drawWorkers(r) {
    const rows = r.workers || [];
    workersCaption.textContent = r.fleet_visible === false ? 'Workers (this web tier cannot see the fleet)' : `Workers (${rows.length})`;
    fill(workersBody, rows.length
      ? rows.map((w) => h('tr', { dataset: { state: w.state } }, h('td', {}, w.name),
        h('td', {}, h('span', { class: `dot dot-${w.state}`, 'aria-hidden': 'true' }), w.state)))
      : h('tr', {}, h('td', { colspan: '2', class: 'hint' }, 'No worker is running: the fleet is at 0.')));
  }

  tick();
  timer = setInterval(tick, REFRESH_MS);
  const onVisible = () => {
    if (!document.hidden) tick();
  };
  document.addEventListener('visibilitychange', onVisible);
  return () => {
    stopped = true;
    clearInterval(timer);
    document.removeEventListener('visibilitychange', onVisible);
  };
}
