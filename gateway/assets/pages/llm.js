// LLM spend: totals, cost per day, and the split by provider and by task, over a chosen range.

import { api, query } from '../api.js';
import { barChart } from '../chart.js';
import { fixed, h, money, mount, unavailable } from '../dom.js';

const RANGES = [
  ['7 days', 7],
  ['30 days', 30],
  ['90 days', 90],
];

const usd = (v) => (Math.abs(Number(v)) < 1 ? `$${fixed(v, 4)}` : `$${money(v)}`);

function kpi(label, value) {
  return h(
    'div',
    { class: 'kpi' },
    h('div', { class: 'label', text: label }),
    h('div', { class: 'value', text: value }),
  );
}

function hbars(rows, key) {
  if (!rows.length) return h('div', { class: 'empty', text: 'No calls in this range.' });
  const max = Math.max(...rows.map((r) => Number(r.cost_usd)), 1e-9);
  return h(
    'div',
    { class: 'hbars' },
    [...rows]
      .sort((a, b) => Number(b.cost_usd) - Number(a.cost_usd))
      .map((r) => {
        const fill = h('div', { class: 'fill' });
        fill.style.width = `${(Number(r.cost_usd) / max) * 100}%`;
        return h(
          'div',
          { class: 'hbar' },
          h(
            'div',
            { class: 'row' },
            h('span', { text: r[key] ?? r.key }),
            h(
              'span',
              {},
              h('b', { text: usd(r.cost_usd) }),
              h('span', { class: 'muted', text: ` · ${r.calls} calls` }),
            ),
          ),
          h('div', { class: 'track' }, fill),
        );
      }),
  );
}

export function render(main) {
  let days = 30;
  const buttons = RANGES.map(([label, d]) => {
    const b = h('button', { type: 'button', text: label });
    b.addEventListener('click', () => {
      days = d;
      load();
    });
    return [b, d];
  });
  const kpis = h('div', { class: 'kpis' });
  const chart = h('div', { id: 'llm-chart' });
  const providers = h('div');
  const tasks = h('div');
  mount(
    main,
    h('h1', { text: 'LLM spend' }),
    h(
      'div',
      { class: 'toolbar' },
      buttons.map(([b]) => b),
    ),
    kpis,
    h(
      'div',
      { class: 'grid' },
      h('section', { class: 'panel span-12' }, h('h2', { text: 'Cost per day (USD)' }), chart),
      h('section', { class: 'panel span-6' }, h('h2', { text: 'By provider' }), providers),
      h('section', { class: 'panel span-6' }, h('h2', { text: 'By task' }), tasks),
    ),
  );

  async function load() {
    for (const [b, d] of buttons) b.classList.toggle('primary', d === days);
    const to = new Date();
    const from = new Date(to.getTime() - days * 86_400_000);
    const u = await api(`/llm/usage${query({ from: from.toISOString(), to: to.toISOString() })}`);
    mount(
      kpis,
      kpi('Total cost', usd(u.total_cost_usd)),
      kpi('Calls', String(u.calls)),
      kpi('Failures', String(u.failures)),
      kpi('Prompt tokens', fixed(u.prompt_tokens, 0)),
      kpi('Completion tokens', fixed(u.completion_tokens, 0)),
    );
    // Every day of the range gets a bar, zero when nothing was spent.
    const byDay = new Map((u.by_day || []).map((d) => [String(d.day ?? d.key).slice(0, 10), d]));
    const bars = [];
    for (let t = from.getTime(); t <= to.getTime(); t += 86_400_000) {
      const day = new Date(t).toISOString().slice(0, 10);
      const d = byDay.get(day);
      bars.push({ label: day.slice(5), title: `${day} · ${d ? d.calls : 0} calls`, value: d ? Number(d.cost_usd) : 0 });
    }
    barChart(chart, bars, { height: 220, format: (v) => `$${fixed(v, v < 1 ? 3 : 2)}`, label: 'LLM cost per day' });
    mount(providers, hbars(u.by_provider || [], 'provider'));
    mount(tasks, hbars(u.by_task || [], 'task'));
  }
  load().catch((err) => err.status !== 401 && mount(kpis, unavailable('the LLM usage', err)));
}
