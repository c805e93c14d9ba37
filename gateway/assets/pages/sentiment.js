// Sentiment per token: the latest score of each token, and the timeline of the one selected.

import { api, query } from '../api.js';
import { lineChart } from '../chart.js';
import { fixed, h, mount, table, time, tone, unavailable } from '../dom.js';
import { live } from '../live.js';

function meter(score) {
  const bar = h('span', { class: score >= 0 ? 'pos' : 'neg' });
  const width = Math.min(Math.abs(score), 1) * 50;
  bar.style.width = `${width}%`;
  bar.style.left = score >= 0 ? '50%' : `${50 - width}%`;
  return h('div', { class: 'meter' }, bar);
}

export function render(main, [selected]) {
  const tokens = h('div', { class: 'tokens', id: 'tokens' });
  const chart = h('div', { id: 'sentiment-chart' });
  const title = h('h2', { text: 'Timeline' });
  const list = h('div', { id: 'sentiment-list' });
  mount(
    main,
    h('h1', { text: 'Sentiment' }),
    tokens,
    h(
      'div',
      { class: 'grid' },
      h('section', { class: 'panel span-12' }, title, chart),
      h('section', { class: 'panel span-12' }, h('h2', { text: 'Latest scores' }), list),
    ),
  );

  async function load() {
    const latest = (await api('/sentiment')).items || [];
    latest.sort((a, b) => a.token.localeCompare(b.token));
    const current = selected || latest[0]?.token;
    mount(
      tokens,
      latest.length
        ? latest.map((p) =>
            h(
              'a',
              {
                class: `token${p.token === current ? ' selected' : ''}`,
                href: `#/sentiment/${encodeURIComponent(p.token)}`,
              },
              h('div', { class: 'name', text: p.token }),
              h('div', { class: `score ${tone(p.score)}`, text: fixed(p.score, 2) }),
              meter(p.score),
              h('div', { class: 'muted', text: `${time(p.at)} · conf ${fixed(p.confidence, 2)}` }),
            ),
          )
        : h('div', { class: 'empty', text: 'No sentiment scored yet.' }),
    );
    if (!current) {
      mount(chart, h('div', { class: 'empty', text: 'Pick a token.' }));
      return;
    }
    title.textContent = `${current}: score over time`;
    const page = await api(`/sentiment/${encodeURIComponent(current)}${query({ limit: 1000 })}`);
    const items = page.items || [];
    const points = items.map((p) => [Date.parse(p.at), Number(p.score)]).sort((a, b) => a[0] - b[0]);
    const conf = items.map((p) => [Date.parse(p.at), Number(p.confidence)]).sort((a, b) => a[0] - b[0]);
    lineChart(
      chart,
      [
        { name: 'Score', points },
        { name: 'Confidence', points: conf, color: '#8b98a5' },
      ],
      {
        height: 260,
        yMin: -1,
        yMax: 1,
        zero: true,
        area: false,
        label: `Sentiment of ${current}`,
        format: (v) => fixed(v, 2),
      },
    );
    mount(
      list,
      table(
        [
          { label: 'Time', value: (r) => time(r.at) },
          { label: 'Score', num: true, value: (r) => h('span', { class: tone(r.score), text: fixed(r.score, 3) }) },
          { label: 'Confidence', num: true, value: (r) => fixed(r.confidence, 2) },
          { label: 'Model', value: (r) => r.model },
        ],
        items.slice(0, 20),
      ),
    );
  }
  load().catch((err) => err.status !== 401 && mount(tokens, unavailable('sentiment', err)));
  const off = live.subscribe((e) => {
    if (e.event_type === 'SentimentScored') load().catch(() => {});
  });
  return off;
}
