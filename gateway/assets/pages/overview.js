// Overview: equity curve, P&L, positions, recent trades, risk status with the kill switch, live events.

import { api, session } from '../api.js';
import { lineChart } from '../chart.js';
import { badge, fixed, h, money, mount, num, qty, signed, table, time, toast, tone, unavailable } from '../dom.js';
import { live } from '../live.js';

// Events after which the numbers on this page may have moved.
const REFRESH_ON =
  /^(OrderFilled|PositionChanged|PnlRealized|PortfolioMarked|PortfolioOpened|TradingHalted|TradingResumed|OrderRefused|TradeRejected|CandleClosed|PriceObserved)$/;

function kpi(label, value, hint, cls = '') {
  return h(
    'div',
    { class: 'kpi' },
    h('div', { class: 'label', text: label }),
    h('div', { class: `value ${cls}`, text: value }),
    hint ? h('div', { class: 'hint', text: hint }) : null,
  );
}

/** A one-line summary of an event's payload for the feed. */
export function summary(event) {
  const p = event.payload || {};
  const parts = [];
  for (const key of [
    'symbol',
    'token',
    'side',
    'quantity',
    'price',
    'close',
    'score',
    'reason',
    'provider',
    'cost_usd',
  ]) {
    const v = p[key] ?? p.candle?.[key] ?? p.fill?.[key];
    if (v !== undefined && v !== null && typeof v !== 'object')
      parts.push(key === 'symbol' || key === 'token' || key === 'side' ? String(v) : `${key} ${v}`);
  }
  return parts.join(' · ');
}

export function feedItem(event, fresh = false) {
  return h(
    'li',
    { class: fresh ? 'fresh' : null, dataset: { eventId: event.event_id || '', eventType: event.event_type } },
    h('span', { class: 't', text: time(event.recorded_at) }),
    h('a', { class: 'ty', href: `#/events/${event.event_id}`, text: event.event_type }),
    h('span', { class: 'muted', text: summary(event) }),
  );
}

export function render(main) {
  const kpis = h('div', { class: 'kpis', id: 'kpis' });
  const chart = h('div', { id: 'equity-chart' });
  const risk = h('div', { id: 'risk' });
  const positions = h('div', { id: 'positions' });
  const trades = h('div', { id: 'trades' });
  const feed = h('ul', { class: 'feed', id: 'live-feed' });
  const dialog = h('dialog', { id: 'command-dialog' });

  mount(
    main,
    h('h1', { text: 'Overview' }),
    kpis,
    h(
      'div',
      { class: 'grid' },
      h(
        'section',
        { class: 'panel span-8' },
        h('h2', {}, 'Equity', h('span', { class: 'sub', text: 'portfolio value over time' })),
        chart,
      ),
      h('section', { class: 'panel span-4' }, h('h2', { text: 'Risk' }), risk),
      h('section', { class: 'panel span-6' }, h('h2', { text: 'Positions' }), positions),
      h('section', { class: 'panel span-6' }, h('h2', { text: 'Recent trades' }), trades),
      h(
        'section',
        { class: 'panel span-12' },
        h('h2', {}, 'Live events', h('span', { class: 'sub', text: 'as they happen' })),
        feed,
      ),
    ),
    dialog,
  );

  for (const event of live.recent.slice(0, 30)) feed.append(feedItem(event));
  if (!feed.children.length) feed.append(h('li', { class: 'muted', id: 'feed-empty', text: 'Waiting for events…' }));

  async function loadPortfolio() {
    const p = await api('/portfolio');
    const unit = p.quote_asset || '';
    const dayPnl =
      num(p.equity) !== null && num(p.day_start_equity) !== null ? num(p.equity) - num(p.day_start_equity) : null;
    const hwm = num(p.high_water_mark);
    const drawdown = hwm ? Math.min(num(p.equity) - hwm, 0) / hwm : null;
    mount(
      kpis,
      kpi('Equity', money(p.equity), unit + (p.as_of ? ` · ${time(p.as_of)}` : '')),
      kpi('Day P&L', signed(dayPnl), unit, tone(dayPnl)),
      kpi('Realized P&L', signed(p.realized_pnl), unit, tone(p.realized_pnl)),
      kpi('Unrealized P&L', signed(p.unrealized_pnl), unit, tone(p.unrealized_pnl)),
      kpi('Cash', money(p.cash), unit),
      kpi(
        'Drawdown',
        drawdown === null ? '—' : `${(drawdown * 100).toFixed(2)}%`,
        `from high ${money(hwm)}`,
        tone(drawdown),
      ),
    );
    mount(
      positions,
      table(
        [
          { label: 'Symbol', value: (r) => r.symbol },
          { label: 'Qty', num: true, value: (r) => qty(r.quantity) },
          { label: 'Avg cost', num: true, value: (r) => money(r.avg_cost) },
          { label: 'Price', num: true, value: (r) => money(r.price) },
          { label: 'Value', num: true, value: (r) => money(r.market_value) },
          {
            label: 'Unrealized',
            num: true,
            value: (r) => h('span', { class: tone(r.unrealized_pnl), text: signed(r.unrealized_pnl) }),
          },
        ],
        (p.positions || []).filter((r) => num(r.quantity) !== 0),
        { empty: 'No open positions.' },
      ),
    );
  }

  async function loadEquity() {
    const page = await api('/portfolio/equity?limit=1000');
    const points = (page.items || [])
      .map((e) => [Date.parse(e.at), num(e.equity)])
      .filter((p) => p[1] !== null)
      .sort((a, b) => a[0] - b[0]);
    lineChart(chart, [{ name: 'Equity', points }], {
      height: 280,
      label: 'Equity curve',
      format: (v) => fixed(v, 2),
      empty: 'No equity recorded yet.',
    });
  }

  async function loadTrades() {
    const page = await api('/trades?limit=12');
    mount(
      trades,
      table(
        [
          { label: 'Time', value: (r) => time(r.filled_at) },
          { label: 'Symbol', value: (r) => r.symbol },
          { label: 'Side', value: (r) => badge(r.side) },
          { label: 'Qty', num: true, value: (r) => qty(r.quantity) },
          { label: 'Price', num: true, value: (r) => money(r.price) },
          { label: 'Fee', num: true, value: (r) => money(r.fee) },
        ],
        page.items,
        { empty: 'No trades yet.' },
      ),
    );
  }

  async function loadRisk() {
    const r = await api('/risk');
    const state = h(
      'div',
      {},
      h('div', {
        class: `state ${r.halted ? 'halted' : 'active'}`,
        id: 'risk-state',
        text: r.halted ? 'HALTED' : 'Trading',
      }),
      r.halted
        ? h('div', { class: 'muted', text: `${r.halt_reason || 'no reason given'} · since ${time(r.halted_at)}` })
        : h('div', { class: 'muted', text: `${r.rejections_today} orders refused today` }),
    );
    let button = null;
    if (session.canCommand()) {
      button = r.halted
        ? h('button', {
            class: 'good',
            id: 'kill-switch',
            type: 'button',
            dataset: { command: 'resume' },
            text: 'Resume trading',
          })
        : h('button', {
            class: 'danger',
            id: 'kill-switch',
            type: 'button',
            dataset: { command: 'halt' },
            text: 'Halt trading',
          });
      button.addEventListener('click', () => ask(r.halted ? 'resume' : 'halt'));
    }
    mount(
      risk,
      h('div', { class: 'risk-state' }, state, button),
      h('h2', { class: 'sub-head', text: 'Last refusals' }),
      (r.last_rejections || []).length
        ? h(
            'ul',
            { class: 'plain' },
            r.last_rejections
              .slice(0, 5)
              .map((x) =>
                h(
                  'li',
                  {},
                  h('b', { text: x.symbol }),
                  ' ',
                  h('span', { class: 'muted', text: `${time(x.decided_at)} · ${(x.reasons || []).join('; ')}` }),
                ),
              ),
          )
        : h('div', { class: 'muted', text: 'None.' }),
    );
  }

  function ask(command) {
    const reason = h('input', {
      id: 'command-reason',
      value: command === 'halt' ? 'manual halt from the dashboard' : 'manual resume from the dashboard',
    });
    const confirm = h('button', {
      class: command === 'halt' ? 'danger' : 'good',
      id: 'confirm-command',
      type: 'button',
      dataset: { command },
      text: command === 'halt' ? 'Halt trading' : 'Resume trading',
    });
    const cancel = h('button', { type: 'button', text: 'Cancel' });
    mount(
      dialog,
      h('h2', { text: command === 'halt' ? 'Halt all trading?' : 'Resume trading?' }),
      h('p', {
        class: 'muted',
        text:
          command === 'halt'
            ? 'The risk agent refuses every new order until trading is resumed.'
            : 'The risk agent admits orders again, within its limits.',
      }),
      h('label', { for: 'command-reason', text: 'Reason (kept in the audit trail)' }),
      reason,
      h('div', { class: 'actions' }, cancel, confirm),
    );
    cancel.addEventListener('click', () => dialog.close());
    confirm.addEventListener('click', async () => {
      confirm.disabled = true;
      try {
        await api(`/commands/${command}`, { method: 'POST', body: { reason: reason.value } });
        dialog.close();
        toast(command === 'halt' ? 'Trading halted.' : 'Trading resumed.');
        await loadRisk();
      } catch (err) {
        toast(`${command} failed: ${err.message}`, { error: true });
        confirm.disabled = false;
      }
    });
    dialog.showModal();
  }

  // A panel that cannot load says so in place (e.g. 503 while the projections catch up).
  const failed =
    (what, ...panels) =>
    (err) => {
      if (err.status === 401) return;
      for (const panel of panels) mount(panel, unavailable(what, err));
    };
  const loadAll = () =>
    Promise.all([
      loadPortfolio().catch(failed('the portfolio', kpis, positions)),
      loadEquity().catch(failed('the equity curve', chart)),
      loadTrades().catch(failed('trades', trades)),
      loadRisk().catch(failed('the risk state', risk)),
    ]);
  loadAll();

  let pending = null;
  const unsubscribe = live.subscribe((event) => {
    main.querySelector('#feed-empty')?.remove();
    feed.prepend(feedItem(event, true));
    while (feed.children.length > 50) feed.lastChild.remove();
    if (REFRESH_ON.test(event.event_type) && !pending) {
      // Read models catch up a moment after the event: refresh once per burst.
      pending = setTimeout(() => {
        pending = null;
        loadAll();
      }, 700);
    }
  });
  return () => {
    unsubscribe();
    clearTimeout(pending);
  };
}
