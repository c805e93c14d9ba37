// Dependency-free SVG charts: a time-series line chart and a bar chart, with axes, grid lines,
// labels and a hover read-out. They redraw at the container's width (ResizeObserver), so text never scales.

import { h, s } from './dom.js';

export const COLORS = ['#4cc2ff', '#3fb950', '#d29922', '#bc8cff', '#f85149', '#39c5bb'];

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const TIME_STEPS = [
  MINUTE,
  5 * MINUTE,
  15 * MINUTE,
  30 * MINUTE,
  HOUR,
  3 * HOUR,
  6 * HOUR,
  12 * HOUR,
  DAY,
  2 * DAY,
  7 * DAY,
  14 * DAY,
  30 * DAY,
  91 * DAY,
  365 * DAY,
];

/** Round tick values covering [min, max]: steps of 1, 2 or 5 times a power of ten. */
export function niceTicks(min, max, count = 5) {
  if (!(max > min)) {
    const pad = Math.abs(min) * 0.05 || 1;
    min -= pad;
    max += pad;
  }
  const raw = (max - min) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const lo = Math.floor(min / step) * step;
  const hi = Math.ceil(max / step) * step;
  const ticks = [];
  for (let v = lo; v <= hi + step / 2; v += step) ticks.push(Math.abs(v) < step / 1e6 ? 0 : v);
  return { lo, hi, ticks, step };
}

function timeTicks(min, max, wanted) {
  const span = Math.max(max - min, MINUTE);
  const step = TIME_STEPS.find((st) => span / st <= wanted) || TIME_STEPS[TIME_STEPS.length - 1];
  const offset = step >= DAY ? new Date(min).getTimezoneOffset() * MINUTE : 0;
  const ticks = [];
  for (let t = Math.ceil((min - offset) / step) * step + offset; t <= max; t += step) ticks.push(t);
  return { ticks, step };
}

const pad2 = (x) => String(x).padStart(2, '0');
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function timeLabel(t, step) {
  const d = new Date(t);
  if (step >= 30 * DAY) return `${MONTHS[d.getMonth()]} ${d.getFullYear()}`;
  if (step >= DAY) return `${MONTHS[d.getMonth()]} ${d.getDate()}`;
  if (d.getHours() === 0 && d.getMinutes() === 0) return `${MONTHS[d.getMonth()]} ${d.getDate()}`;
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

/** The full date and time for a read-out. */
export function fullTime(t) {
  const d = new Date(t);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

const defaultFormat = (v) => new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 }).format(v);

// Index of the point nearest to x in points sorted by x.
function nearest(points, x) {
  let lo = 0;
  let hi = points.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (points[mid][0] < x) lo = mid;
    else hi = mid;
  }
  return Math.abs(points[lo][0] - x) <= Math.abs(points[hi][0] - x) ? lo : hi;
}

const observers = new WeakMap();

// Draws with `draw(width)` now and whenever the container's width changes.
function responsive(container, draw) {
  container.classList.add('chart');
  let width = 0;
  const redraw = () => {
    const w = Math.max(Math.floor(container.clientWidth), 280);
    if (w === width) return;
    width = w;
    draw(w);
  };
  redraw();
  observers.get(container)?.disconnect();
  if (typeof ResizeObserver !== 'undefined') {
    const ro = new ResizeObserver(redraw);
    ro.observe(container);
    observers.set(container, ro);
  }
}

function tooltip(container, x, y, width, title, rows) {
  let tip = container.querySelector('.tooltip');
  if (!tip) {
    tip = h('div', { class: 'tooltip' });
    container.append(tip);
  }
  tip.replaceChildren(
    h('div', { class: 'tt-title', text: title }),
    ...rows.map(([color, name, value]) =>
      h(
        'div',
        {},
        color ? h('span', { class: 'mono', text: '● ' }) : null,
        name ? `${name}: ` : '',
        h('b', { text: value }),
      ),
    ),
  );
  rows.forEach(([color], i) => {
    const dot = tip.children[i + 1]?.querySelector('.mono');
    if (dot) dot.style.color = color;
  });
  tip.classList.remove('hidden');
  const tw = tip.offsetWidth;
  tip.style.left = `${Math.min(Math.max(x + 12, 0), width - tw - 4)}px`;
  if (x + 12 + tw > width) tip.style.left = `${Math.max(x - tw - 12, 0)}px`;
  tip.style.top = `${Math.max(y - 10, 0)}px`;
}

function hideTooltip(container) {
  container.querySelector('.tooltip')?.classList.add('hidden');
}

/**
 * A line chart of time series.
 * series: [{name, points: [[time ms, value], ...] sorted by time, color?}]
 * options: {height, format(v) for the y axis and read-out, zero: draw y = 0, area: shade under the first series,
 *           yMin, yMax: fixed bounds, label: aria-label}
 */
export function lineChart(container, series, options = {}) {
  const { height = 260, format = defaultFormat, zero = false, area = true, label = 'chart' } = options;
  const drawn = series.filter((se) => se.points.length > 0);
  container.replaceChildren();
  if (drawn.length === 0) {
    container.append(h('div', { class: 'empty', text: options.empty || 'No data yet.' }));
    return;
  }
  drawn.forEach((se, i) => (se.color ||= COLORS[i % COLORS.length]));
  const xs = drawn.flatMap((se) => se.points.map((p) => p[0]));
  const ys = drawn.flatMap((se) => se.points.map((p) => p[1]));
  let yMin = options.yMin ?? Math.min(...ys);
  let yMax = options.yMax ?? Math.max(...ys);
  if (zero) {
    yMin = Math.min(yMin, 0);
    yMax = Math.max(yMax, 0);
  }
  const yt = niceTicks(yMin, yMax, 5);
  if (options.yMin !== undefined) yt.lo = options.yMin;
  if (options.yMax !== undefined) yt.hi = options.yMax;
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs) > xMin ? Math.max(...xs) : xMin + HOUR;

  responsive(container, (width) => {
    const labelWidth = Math.max(...yt.ticks.map((v) => format(v).length)) * 6.6 + 12;
    const m = { top: 10, right: 14, bottom: 26, left: Math.max(labelWidth, 36) };
    const iw = width - m.left - m.right;
    const ih = height - m.top - m.bottom;
    const sx = (t) => m.left + ((t - xMin) / (xMax - xMin)) * iw;
    const sy = (v) => m.top + ih - ((v - yt.lo) / (yt.hi - yt.lo || 1)) * ih;
    const xt = timeTicks(xMin, xMax, Math.max(2, Math.floor(iw / 95)));

    const svg = s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label });
    const axis = s('g', { class: 'axis' });
    for (const v of yt.ticks) {
      if (v < yt.lo - 1e-9 || v > yt.hi + 1e-9) continue;
      const y = sy(v);
      axis.append(
        s('line', { class: v === 0 && zero ? 'zero-line' : 'grid-line', x1: m.left, x2: m.left + iw, y1: y, y2: y }),
        s('text', { x: m.left - 6, y: y + 4, 'text-anchor': 'end', text: format(v) }),
      );
    }
    for (const t of xt.ticks) {
      const x = sx(t);
      axis.append(
        s('line', { class: 'grid-line', x1: x, x2: x, y1: m.top + ih, y2: m.top + ih + 4 }),
        s('text', { x, y: height - 8, 'text-anchor': 'middle', text: timeLabel(t, xt.step) }),
      );
    }
    svg.append(axis);

    drawn.forEach((se, i) => {
      const d = se.points.map((p, j) => `${j ? 'L' : 'M'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join('');
      if (area && i === 0 && se.points.length > 1) {
        const base = sy(Math.max(yt.lo, Math.min(0, yt.hi)));
        const first = se.points[0];
        const last = se.points[se.points.length - 1];
        svg.append(
          s('path', {
            class: 'area',
            fill: se.color,
            d: `${d}L${sx(last[0]).toFixed(1)},${base}L${sx(first[0]).toFixed(1)},${base}Z`,
          }),
        );
      }
      svg.append(s('path', { class: 'series', stroke: se.color, d, 'data-series': se.name }));
      if (se.points.length === 1) {
        svg.append(s('circle', { cx: sx(se.points[0][0]), cy: sy(se.points[0][1]), r: 3, fill: se.color }));
      }
    });

    // Hover read-out: the nearest point of each series to the pointer's time.
    const cross = s('line', { class: 'cross hidden', y1: m.top, y2: m.top + ih });
    const dots = drawn.map((se) => s('circle', { r: 4, fill: se.color, class: 'hidden' }));
    const hit = s('rect', { x: m.left, y: m.top, width: iw, height: ih, fill: 'transparent' });
    svg.append(cross, ...dots, hit);
    hit.addEventListener('pointermove', (ev) => {
      const box = svg.getBoundingClientRect();
      const t = xMin + ((ev.clientX - box.left - m.left) / iw) * (xMax - xMin);
      const picks = drawn.map((se) => se.points[nearest(se.points, t)]);
      const at = picks[0][0];
      cross.setAttribute('x1', sx(at));
      cross.setAttribute('x2', sx(at));
      cross.classList.remove('hidden');
      picks.forEach((p, i) => {
        dots[i].setAttribute('cx', sx(p[0]));
        dots[i].setAttribute('cy', sy(p[1]));
        dots[i].classList.remove('hidden');
      });
      tooltip(
        container,
        sx(at),
        Math.min(...picks.map((p) => sy(p[1]))),
        width,
        fullTime(at),
        drawn.map((se, i) => [se.color, drawn.length > 1 ? se.name : '', format(picks[i][1])]),
      );
    });
    hit.addEventListener('pointerleave', () => {
      cross.classList.add('hidden');
      dots.forEach((d) => d.classList.add('hidden'));
      hideTooltip(container);
    });

    const children = [svg];
    if (drawn.length > 1) {
      const legend = h('div', { class: 'legend' });
      for (const se of drawn) {
        const swatch = h('i');
        swatch.style.background = se.color;
        legend.append(h('span', {}, swatch, se.name));
      }
      children.push(legend);
    }
    container.replaceChildren(...children);
  });
}

/**
 * A vertical bar chart.
 * bars: [{label, value, title?}]; options: {height, format(v)}
 */
export function barChart(container, bars, options = {}) {
  const { height = 220, format = defaultFormat, label = 'bar chart' } = options;
  container.replaceChildren();
  if (bars.length === 0) {
    container.append(h('div', { class: 'empty', text: options.empty || 'No data yet.' }));
    return;
  }
  const yt = niceTicks(0, Math.max(...bars.map((b) => b.value), 0), 4);
  responsive(container, (width) => {
    const labelWidth = Math.max(...yt.ticks.map((v) => format(v).length)) * 6.6 + 12;
    const m = { top: 10, right: 10, bottom: 26, left: Math.max(labelWidth, 36) };
    const iw = width - m.left - m.right;
    const ih = height - m.top - m.bottom;
    const sy = (v) => m.top + ih - ((v - yt.lo) / (yt.hi - yt.lo || 1)) * ih;
    const slot = iw / bars.length;
    const bw = Math.max(Math.min(slot * 0.7, 48), 2);
    const every = Math.ceil(bars.length / Math.max(1, Math.floor(iw / 70)));

    const svg = s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label });
    const axis = s('g', { class: 'axis' });
    for (const v of yt.ticks) {
      const y = sy(v);
      axis.append(
        s('line', { class: 'grid-line', x1: m.left, x2: m.left + iw, y1: y, y2: y }),
        s('text', { x: m.left - 6, y: y + 4, 'text-anchor': 'end', text: format(v) }),
      );
    }
    bars.forEach((b, i) => {
      if (i % every === 0) {
        axis.append(
          s('text', { x: m.left + slot * i + slot / 2, y: height - 8, 'text-anchor': 'middle', text: b.label }),
        );
      }
    });
    svg.append(axis);
    bars.forEach((b, i) => {
      const x = m.left + slot * i + (slot - bw) / 2;
      const y = sy(b.value);
      const rect = s('rect', { class: 'bar', x, y, width: bw, height: Math.max(m.top + ih - y, 0.5), rx: 2 });
      rect.addEventListener('pointerenter', () => {
        rect.classList.add('hover');
        tooltip(container, x + bw / 2, y, width, b.title || b.label, [[null, '', format(b.value)]]);
      });
      rect.addEventListener('pointerleave', () => {
        rect.classList.remove('hover');
        hideTooltip(container);
      });
      svg.append(rect);
    });
    container.replaceChildren(svg);
  });
}
