// Backtests: the runs, and for the one selected its equity curve and metrics.

import { api } from '../api.js';
import { lineChart } from '../chart.js';
import { badge, fixed, h, mount, num, pct, shortId, table, time, unavailable } from '../dom.js';

// Metrics worth a column in the list, when a run reports them.
const HEADLINE = [
  'final_equity',
  'total_return',
  'buy_and_hold_return',
  'sharpe',
  'max_drawdown',
  'win_rate',
  'trades',
];
// Metrics that are fractions, shown as percentages.
const PERCENT = new Set(['total_return', 'buy_and_hold_return', 'cagr', 'max_drawdown', 'win_rate', 'exposure_time']);

function metricValue(v, key) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'object') return JSON.stringify(v);
  const n = num(v);
  if (n === null) return String(v);
  return PERCENT.has(key) ? pct(n) : fixed(n, Math.abs(n) >= 100 ? 2 : 4);
}

export function render(main, [runId]) {
  const runs = h('div', { id: 'backtest-runs' });
  const detail = h('div', { id: 'backtest-detail' });
  mount(
    main,
    h('h1', { text: 'Backtests' }),
    h(
      'div',
      { class: 'grid' },
      runId ? h('section', { class: 'panel span-12' }, detail) : null,
      h('section', { class: 'panel span-12' }, h('h2', { text: 'Runs' }), runs),
    ),
  );

  async function loadRuns() {
    const page = await api('/backtests?limit=100');
    const items = page.items || [];
    mount(
      runs,
      table(
        [
          { label: 'Started', value: (r) => time(r.started_at) },
          { label: 'Run', value: (r) => shortId(r.run_id) },
          { label: 'Status', value: (r) => badge(r.status) },
          ...HEADLINE.map((k) => ({
            label: k.replace(/_/g, ' '),
            num: true,
            value: (r) => metricValue(r.metrics?.[k], k),
          })),
        ],
        items,
        {
          empty: 'No backtest runs yet (jarvis backtest ...).',
          onRow: (r) => (location.hash = `#/backtests/${r.run_id}`),
          rowAttrs: (r) => ({ class: r.run_id === runId ? 'clickable selected' : 'clickable' }),
        },
      ),
    );
  }

  async function loadRun() {
    const run = await api(`/backtests/${runId}`);
    const chart = h('div', { id: 'backtest-chart' });
    const points = (run.equity_curve || [])
      .map((e) => [Date.parse(e.at), num(e.equity)])
      .filter((p) => p[1] !== null)
      .sort((a, b) => a[0] - b[0]);
    const metrics = Object.entries(run.metrics || {});
    mount(
      detail,
      h(
        'h2',
        {},
        `Run ${String(run.run_id).slice(0, 8)}`,
        h('span', { class: 'sub', text: `${time(run.started_at)} → ${time(run.finished_at)} · ${run.status}` }),
      ),
      chart,
      h(
        'div',
        { class: 'metrics' },
        metrics.map(([k, v]) =>
          h(
            'div',
            { class: 'metric' },
            h('div', { class: 'label', text: k.replace(/_/g, ' ') }),
            h('div', { class: 'value', text: metricValue(v, k) }),
          ),
        ),
      ),
      h(
        'details',
        {},
        h('summary', { class: 'muted', text: 'Configuration' }),
        h('pre', { class: 'json', text: JSON.stringify(run.config, null, 2) }),
      ),
    );
    lineChart(chart, [{ name: 'Equity', points }], {
      height: 260,
      label: 'Backtest equity curve',
      format: (v) => fixed(v, 2),
      empty: 'This run has no equity curve.',
    });
  }

  loadRuns().catch((err) => err.status !== 401 && mount(runs, unavailable('the backtests', err)));
  if (runId) loadRun().catch((err) => err.status !== 401 && mount(detail, unavailable('the run', err)));
}
