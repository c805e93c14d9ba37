// Event explorer: recent events, search by event id or correlation id, and an event's causal chain
// (its causes back to the root) beside everything else in its correlation.

import { api, ApiError, query } from '../api.js';
import { h, mount, shortId, table, time, toast, unavailable } from '../dom.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function eventsTable(items, current) {
  return table(
    [
      { label: 'Recorded', value: (e) => time(e.recorded_at) },
      { label: 'Type', value: (e) => h('b', { text: e.event_type }) },
      { label: 'Aggregate', value: (e) => h('span', { class: 'mono', text: `${e.aggregate_type}/${e.aggregate_id}` }) },
      { label: 'Seq', num: true, value: (e) => String(e.sequence) },
      { label: 'Source', value: (e) => e.source },
      { label: 'Event', value: (e) => shortId(e.event_id) },
      { label: 'Correlation', value: (e) => shortId(e.correlation_id) },
    ],
    items,
    {
      empty: 'No events match.',
      onRow: (e) => (location.hash = `#/events/${e.event_id}`),
      rowAttrs: (e) => ({
        class: e.event_id === current ? 'clickable selected' : 'clickable',
        dataset: { eventId: e.event_id },
      }),
    },
  );
}

export function render(main, [eventId]) {
  const search = h('input', { id: 'event-search', placeholder: 'event id or correlation id', value: eventId || '' });
  const type = h('input', { id: 'event-type', placeholder: 'event type, e.g. OrderFilled' });
  const go = h('button', { class: 'primary', type: 'submit', text: 'Search' });
  const results = h('div', { id: 'event-results' });
  const detail = h('div', { id: 'event-detail' });
  const form = h('form', { class: 'toolbar' }, search, type, go);
  mount(
    main,
    h('h1', { text: 'Event explorer' }),
    form,
    h(
      'div',
      { class: 'grid' },
      h(
        'section',
        { class: `panel ${eventId ? 'span-6' : 'span-12'}` },
        h('h2', { text: eventId ? 'Same correlation' : 'Events' }),
        results,
      ),
      eventId ? h('section', { class: 'panel span-6' }, detail) : null,
    ),
  );

  async function list(params) {
    const page = await api(`/events${query({ limit: 100, ...params })}`);
    mount(results, eventsTable(page.items || [], eventId));
  }

  async function show(id) {
    const [event, chain] = await Promise.all([api(`/events/${id}`), api(`/events/${id}/chain`)]);
    mount(
      detail,
      h('h2', {}, event.event_type, h('span', { class: 'sub', text: time(event.recorded_at) })),
      h('div', { class: 'muted mono', text: `event ${event.event_id}` }),
      h('div', { class: 'muted mono', text: `correlation ${event.correlation_id}` }),
      h('h2', { class: 'sub-head', text: 'Causal chain (root first)' }),
      h(
        'ol',
        { class: 'chain', id: 'causal-chain' },
        (chain.items || []).map((e) =>
          h(
            'li',
            { class: e.event_id === event.event_id ? 'current' : null },
            h('a', { class: 'ty', href: `#/events/${e.event_id}`, text: e.event_type }),
            h('div', {
              class: 'muted',
              text: `${time(e.recorded_at)} · ${e.source} · ${e.aggregate_type}/${e.aggregate_id}`,
            }),
          ),
        ),
      ),
      h('h2', { class: 'sub-head', text: 'Payload' }),
      h('pre', { class: 'json', text: JSON.stringify(event.payload, null, 2) }),
    );
    await list({ correlation_id: event.correlation_id });
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = search.value.trim();
    try {
      if (UUID.test(text)) {
        // An event id opens the event; otherwise it is taken as a correlation id.
        try {
          await api(`/events/${text}`);
          location.hash = `#/events/${text}`;
          return;
        } catch (err) {
          if (!(err instanceof ApiError) || err.status !== 404) throw err;
        }
        await list({ correlation_id: text, type: type.value.trim() });
      } else if (text) {
        toast('Enter an event id or a correlation id (a UUID).', { error: true });
      } else {
        await list({ type: type.value.trim() });
      }
    } catch (err) {
      toast(`Search failed: ${err.message}`, { error: true });
    }
  });

  (eventId ? show(eventId) : list({})).catch(
    (err) => err.status !== 401 && mount(eventId ? detail : results, unavailable('the events', err)),
  );
}
