// Small DOM and formatting helpers. Everything from the API goes in as text (textContent), never as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.setAttribute('class', value);
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h('td', {class: 'num'}, '12.5'). */
export function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces an element's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table from column specs {label, value(row) -> node|string, num?}; rows may be clicked. */
export function table(columns, rows, { empty = 'Nothing yet.', onRow, rowAttrs } = {}) {
  if (!rows || rows.length === 0) return h('div', { class: 'empty', text: empty });
  const head = h(
    'tr',
    {},
    columns.map((c) => h('th', { class: c.num ? 'num' : null, text: c.label })),
  );
  const body = rows.map((row) =>
    h(
      'tr',
      {
        class: onRow ? 'clickable' : null,
        onclick: onRow ? () => onRow(row) : null,
        ...(rowAttrs ? rowAttrs(row) : {}),
      },
      columns.map((c) => h('td', { class: c.num ? 'num' : null }, c.value(row))),
    ),
  );
  return h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, head), h('tbody', {}, body)));
}

export function badge(text, kind = String(text).toLowerCase()) {
  return h('span', { class: `badge ${kind}`, text });
}

// ---- numbers and times ----

/** Parses a decimal string (or number) for display or charting; null when absent. */
export function num(v) {
  if (v === null || v === undefined || v === '') return null;
  const n = typeof v === 'number' ? v : Number(v);
  return Number.isFinite(n) ? n : null;
}

const fmtCache = new Map();
function nf(min, max) {
  const key = `${min}/${max}`;
  if (!fmtCache.has(key)) {
    fmtCache.set(key, new Intl.NumberFormat('en-US', { minimumFractionDigits: min, maximumFractionDigits: max }));
  }
  return fmtCache.get(key);
}

/** A money amount: 2 decimals, thousands separators. */
export function money(v, unit = '') {
  const n = num(v);
  if (n === null) return '—';
  return nf(2, 2).format(n) + (unit ? ` ${unit}` : '');
}

/** A signed money amount (+12.30). */
export function signed(v, digits = 2) {
  const n = num(v);
  if (n === null) return '—';
  return (n > 0 ? '+' : '') + nf(digits, digits).format(n);
}

/** A quantity: up to 6 decimals. */
export function qty(v) {
  const n = num(v);
  return n === null ? '—' : nf(0, 6).format(n);
}

/** A number with up to `digits` decimals. */
export function fixed(v, digits = 2) {
  const n = num(v);
  return n === null ? '—' : nf(0, digits).format(n);
}

export function pct(v, digits = 2) {
  const n = num(v);
  return n === null ? '—' : `${(n * 100).toFixed(digits)}%`;
}

/** A CSS class for the sign of a number. */
export function tone(v) {
  const n = num(v);
  return n === null || n === 0 ? '' : n > 0 ? 'pos' : 'neg';
}

/** "2026-11-21 10:54" in the viewer's time zone. */
export function time(v) {
  if (!v) return '—';
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return String(v);
  const p = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** "12 s ago", "3 min ago", ... */
export function ago(v) {
  if (!v) return 'never';
  const secs = Math.round((Date.now() - new Date(v).getTime()) / 1000);
  if (secs < 0) return 'just now';
  if (secs < 60) return `${secs} s ago`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ago`;
  return `${Math.floor(secs / 86400)} d ago`;
}

/** The first 8 characters of an id, the full one in a tooltip. */
export function shortId(id) {
  return h('span', { class: 'mono', title: id, text: id ? String(id).slice(0, 8) : '—' });
}

/** The in-place message of a panel whose data could not be loaded. */
export function unavailable(what, err) {
  return h('div', { class: 'empty unavailable', text: `Could not load ${what}: ${err.message}` });
}

/** A transient message at the bottom right. */
export function toast(message, { error = false } = {}) {
  const el = h('div', { class: `toast${error ? ' error' : ''}`, role: 'status', text: message });
  document.body.append(el);
  setTimeout(() => el.remove(), error ? 8000 : 4000);
}
