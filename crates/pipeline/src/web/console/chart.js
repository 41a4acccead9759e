// A small hand-written SVG line chart for the Fleet page: a fixed height
// (the page never reflows when it updates; the drawing follows the box's
// width, so text keeps its size on a phone), a time axis of the last ten
// minutes, a "nice" value axis, one polyline per series (gaps where a value
// is missing), and a legend with the current value of each series.

import { h, s, fill } from './dom.js';

const H = 180;
const PAD = { l: 44, r: 10, t: 10, b: 24 };

/** A tick step of 1, 2 or 5 × 10^k giving about 4 steps up to `max`; whole steps for counts. */
function niceStep(max, whole) {
  const raw = max > 0 ? max / 4 : 0.25;
  const p = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((m) => m * p).find((v) => v >= raw) || 10 * p;
  if (whole) step = Math.max(1, Math.round(step));
  return step;
}

function fmt(v, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (unit === 'ms') return v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)} s` : `${Math.round(v)} ms`;
  if (unit === '/s') return `${v >= 10 || Number.isInteger(v) ? Math.round(v) : v.toFixed(1)}/s`;
  return String(Math.round(v));
}

/**
 * A chart. `series`: [{key, label, cls}] naming fields of the samples;
 * `unit`: '' | '/s' | 'ms'. Returns {el, update(samples, windowMs)}: the
 * last `windowMs` (default ten minutes) are drawn.
 */
export function lineChart({ id, title, series, unit = '' }) {
  const titleId = `${id}-title`;
  const grid = s('g', { class: 'grid' });
  const lines = series.map((se) => s('path', { class: `line ${se.cls}`, d: '' }));
  // A value with no neighbour (e.g. the latency of a lone busy second) is a dot.
  const dots = series.map((se) => s('path', { class: `dots ${se.cls}`, d: '' }));
  let W = 640;
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img', 'aria-labelledby': titleId },
    grid, ...lines, ...dots);
  const values = series.map((se) => h('span', { class: 'now', 'data-series': se.key }, '–'));
  const legend = h('ul', { class: 'legend' },
    series.map((se, i) => h('li', {}, h('span', { class: `swatch ${se.cls}`, 'aria-hidden': 'true' }), `${se.label} `, values[i])));
  const summary = h('span', { class: 'sr-only', 'aria-live': 'off' });
  const el = h('figure', { class: 'chart', id, dataset: { latest: '', peak: '' } },
    h('figcaption', {}, h('span', { class: 'chart-title', id: titleId }, title, summary), legend),
    h('div', { class: 'chart-box' }, svg));

  let last = [];
  let span = 10 * 60 * 1000;
  const box = el.querySelector('.chart-box');
  new ResizeObserver(() => {
    const w = Math.round(box.clientWidth);
    if (w > 0 && w !== W) {
      W = w;
      svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
      update(last);
    }
  }).observe(box);

  function update(samples, windowMs) {
    const all = samples;
    last = all;
    if (windowMs) span = windowMs;
    const end = samples.length ? samples[samples.length - 1].t_ms : Date.now();
    const start = end - span;
    samples = samples.filter((p) => p.t_ms >= start);
    let max = 0;
    for (const p of samples) for (const se of series) {
      const v = p[se.key];
      if (typeof v === 'number' && v > max) max = v;
    }
    const step = niceStep(max, unit === '');
    const top = Math.max(step, Math.ceil(max / step) * step);
    const x = (t) => PAD.l + ((t - start) / span) * (W - PAD.l - PAD.r);
    const y = (v) => H - PAD.b - (v / top) * (H - PAD.t - PAD.b);

    // Grid: a line per value step; five time ticks (fewer on a phone).
    const parts = [];
    for (let v = 0, i = 0; v <= top + step / 2; v += step, i++) {
      parts.push(s('line', { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: i === 0 ? 'axis' : 'rule' }));
      parts.push(s('text', { x: PAD.l - 6, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, fmt(Number(v.toPrecision(6)), unit)));
    }
    const minutes = span >= 120000;
    const ticks = W < 420 ? 2 : 5;
    for (let i = ticks; i >= 0; i--) {
      const ago = (span / ticks) * i;
      const label = i === 0 ? 'now' : minutes ? `−${Math.round(ago / 60000)} min` : `−${Math.round(ago / 1000)} s`;
      parts.push(s('text', { x: x(end - ago), y: H - 6, class: 'tick', 'text-anchor': i === ticks ? 'start' : i === 0 ? 'end' : 'middle' }, label));
    }
    fill(grid, parts);

    series.forEach((se, i) => {
      // Runs of consecutive values; a gap is a missing value, or samples more than 3 s apart.
      const runs = [];
      let run = [];
      let prev = null;
      for (const p of samples) {
        const v = p[se.key];
        if (typeof v !== 'number' || (prev !== null && p.t_ms - prev > 3000)) {
          if (run.length) runs.push(run);
          run = [];
        }
        if (typeof v === 'number') run.push([x(p.t_ms), y(v)]);
        prev = p.t_ms;
      }
      if (run.length) runs.push(run);
      const pt = ([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`;
      lines[i].setAttribute('d', runs.filter((r) => r.length > 1).map((r) => `M${r.map(pt).join('L')}`).join(''));
      dots[i].setAttribute('d', runs.filter((r) => r.length === 1)
        .map(([[a, b]]) => `M${(a - 3).toFixed(1)},${b.toFixed(1)}a3,3 0 1,0 6,0a3,3 0 1,0 -6,0`).join(''));
      const now = samples.length ? samples[samples.length - 1][se.key] : null;
      values[i].textContent = fmt(now, unit);
    });
    const first = series[0].key;
    const latest = samples.length ? samples[samples.length - 1][first] : null;
    const peak = last.reduce((m, p) => (typeof p[first] === 'number' && p[first] > m ? p[first] : m), 0);
    el.dataset.latest = latest === null || latest === undefined ? '' : String(latest);
    el.dataset.peak = String(peak);
    summary.textContent = `: now ${fmt(latest, unit)}, highest in the last 10 minutes ${fmt(peak, unit)}`;
  }

  return { el, update };
}
