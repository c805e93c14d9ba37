// Live events over SSE (`GET /api/v1/stream`). EventSource cannot send headers, so the access token goes in
// the query (`?access_token=`); when the stream fails (an expired token ends it with a 401) we refresh the
// token and reconnect with a growing pause.

import { refresh, session } from './api.js';

// EventSource hands a named event (`event: OrderFilled`) only to a listener registered for that name, so we
// register one per event type we know (schemas/*.json) and also take unnamed messages.
export const KNOWN_EVENT_TYPES = [
  'BacktestCompleted',
  'ChatMessageReceived',
  'ChatReplySent',
  'PaperConfigured',
  'PaperOrderAccepted',
  'PaperOrderCancelled',
  'PaperOrderMatched',
  'BudgetAlert',
  'BudgetExceeded',
  'LlmCallCompleted',
  'LlmCallFailed',
  'LlmCallRequested',
  'PromptFlagged',
  'CandleClosed',
  'PriceObserved',
  'MemoryForgotten',
  'MemoryStored',
  'PnlRealized',
  'PortfolioMarked',
  'PortfolioOpened',
  'PositionChanged',
  'OrderAdmitted',
  'OrderRefused',
  'RiskLimitsSet',
  'TradingHalted',
  'TradingResumed',
  'SentimentScored',
  'TweetReceived',
  'OrderFailed',
  'OrderFilled',
  'OrderSent',
  'OrderSubmitted',
  'QuoteRejected',
  'TradeApproved',
  'TradeProposed',
  'TradeRejected',
];

const MAX_KEPT = 50;

/**
 * One shape for the pages, whichever the stream sends: the CloudEvents-like envelope (`id`, `type`, `time`,
 * `data`, `correlation_id`, ...) or the event record (`event_id`, `event_type`, `recorded_at`, `payload`).
 */
export function normalize(data, msg = {}) {
  const named = msg.type && msg.type !== 'message' ? msg.type : null;
  return {
    ...data,
    event_id: data.event_id ?? data.id ?? msg.lastEventId ?? '',
    event_type: data.event_type ?? named ?? String(data.type ?? 'Event').split('.')[2] ?? 'Event',
    recorded_at: data.recorded_at ?? data.time ?? null,
    correlation_id: data.correlation_id ?? null,
    payload: data.payload ?? data.data ?? {},
  };
}

/** One stream for the whole app; pages subscribe to the events they care about. */
class Live {
  constructor() {
    this.source = null;
    this.listeners = new Set();
    this.statusListeners = new Set();
    this.recent = [];
    this.seen = new Set();
    this.status = 'offline';
    this.retryMs = 1000;
    this.timer = null;
  }

  /** Calls fn(event) for every live event until the returned function is called. */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onStatus(fn) {
    this.statusListeners.add(fn);
    fn(this.status);
    return () => this.statusListeners.delete(fn);
  }

  setStatus(status) {
    this.status = status;
    for (const fn of this.statusListeners) fn(status);
  }

  start() {
    this.stop();
    const token = session.get()?.access_token;
    if (!token) return;
    const source = new EventSource(`/api/v1/stream?access_token=${encodeURIComponent(token)}`);
    this.source = source;
    this.setStatus('connecting');
    const handle = (msg) => this.deliver(msg);
    source.onmessage = handle;
    for (const type of KNOWN_EVENT_TYPES) source.addEventListener(type, handle);
    source.onopen = () => {
      this.retryMs = 1000;
      this.setStatus('connected');
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CONNECTING) {
        this.setStatus('connecting');
        return;
      }
      // Closed for good (e.g. a 401 after the token expired): new token, new stream.
      this.setStatus('error');
      source.close();
      clearTimeout(this.timer);
      this.timer = setTimeout(async () => {
        await refresh().catch(() => {});
        if (session.get()) this.start();
      }, this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 30_000);
    };
  }

  stop() {
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
    this.setStatus('offline');
  }

  deliver(msg) {
    let data;
    try {
      data = JSON.parse(msg.data);
    } catch {
      return;
    }
    const event = normalize(data, msg);
    if (event.event_id) {
      if (this.seen.has(event.event_id)) return;
      this.seen.add(event.event_id);
    }
    this.recent.unshift(event);
    if (this.recent.length > MAX_KEPT) {
      const dropped = this.recent.pop();
      this.seen.delete(dropped.event_id);
    }
    for (const fn of this.listeners) fn(event);
  }
}

export const live = new Live();
