// Agents: heartbeats (status, last seen), consumer lag and dead letters, refreshed every few seconds.

import { api } from '../api.js';
import { ago, badge, h, mount, table, unavailable } from '../dom.js';

export function render(main) {
  const body = h('div', { id: 'agents' });
  const kpis = h('div', { class: 'kpis' });
  mount(
    main,
    h('h1', { text: 'Agents' }),
    kpis,
    h(
      'section',
      { class: 'panel' },
      h('h2', {}, 'Health', h('span', { class: 'sub', text: 'from heartbeats; down after 3 missed intervals' })),
      body,
    ),
  );

  const sum = (xs, f) => xs.reduce((n, x) => n + f(x), 0);
  async function load() {
    const items = (await api('/agents')).items || [];
    items.sort((a, b) => a.agent.localeCompare(b.agent) || a.instance.localeCompare(b.instance));
    const kpi = (label, value, cls = '') =>
      h(
        'div',
        { class: 'kpi' },
        h('div', { class: 'label', text: label }),
        h('div', { class: `value ${cls}`, text: String(value) }),
      );
    const down = items.filter((a) => a.status === 'down').length;
    const dlq = sum(items, (a) => Number(a.dlq_messages) || 0);
    mount(
      kpis,
      kpi('Agents', items.length),
      kpi('Down', down, down ? 'neg' : 'pos'),
      kpi(
        'Pending',
        sum(items, (a) => sum(a.consumers || [], (c) => Number(c.num_pending) || 0)),
      ),
      kpi('Dead letters', dlq, dlq ? 'neg' : ''),
    );
    mount(
      body,
      table(
        [
          { label: 'Agent', value: (a) => h('b', { text: a.agent }) },
          { label: 'Instance', value: (a) => h('span', { class: 'mono', text: a.instance }) },
          { label: 'Status', value: (a) => badge(a.status) },
          { label: 'Last seen', value: (a) => ago(a.last_seen) },
          {
            label: 'Consumers (pending / in flight / redelivered)',
            value: (a) =>
              (a.consumers || []).length
                ? h(
                    'div',
                    {},
                    a.consumers.map((c) =>
                      h('div', {
                        class: 'mono',
                        text: `${c.name}: ${c.num_pending} / ${c.num_ack_pending} / ${c.num_redelivered}`,
                      }),
                    ),
                  )
                : h('span', { class: 'muted', text: '—' }),
          },
          {
            label: 'DLQ',
            num: true,
            value: (a) => h('span', { class: Number(a.dlq_messages) ? 'neg' : '', text: String(a.dlq_messages) }),
          },
        ],
        items,
        { empty: 'No heartbeats received yet.' },
      ),
    );
  }
  load().catch((err) => err.status !== 401 && mount(body, unavailable('the agents', err)));
  const timer = setInterval(() => load().catch(() => {}), 5000);
  return () => clearInterval(timer);
}
