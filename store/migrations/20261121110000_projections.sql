-- Read models of the `projections` crate (see docs/projections.md). They live in their own schema so that a
-- rebuild can fill a twin schema, `projections_rebuild`, and swap each table in with `SET SCHEMA` in one
-- transaction. Every table is derived from the events and can be dropped and rebuilt; each projector's
-- checkpoint is the row `projection:<name>` of `checkpoints`, moved in the same transaction as its rows.
CREATE SCHEMA IF NOT EXISTS projections;
CREATE SCHEMA IF NOT EXISTS projections_rebuild;

-- projector `trading` (also held in memory): portfolio, equity curve, positions, prices, risk.
CREATE TABLE IF NOT EXISTS projections.portfolio
(
    id              smallint PRIMARY KEY CHECK (id = 1),
    quote_asset     text        NOT NULL,
    initial_cash    numeric     NOT NULL,
    cash            numeric     NOT NULL,
    equity          numeric     NOT NULL,
    unrealized_pnl  numeric     NOT NULL,
    realized_pnl    numeric     NOT NULL,
    fees            numeric     NOT NULL,
    high_water_mark numeric     NOT NULL,
    day_start_equity numeric    NOT NULL,
    trades          bigint      NOT NULL,
    opened_at       timestamptz,
    updated_at      timestamptz,
    position        bigint      NOT NULL
);
CREATE TABLE IF NOT EXISTS projections.equity_curve
(
    at              timestamptz PRIMARY KEY,
    equity          numeric     NOT NULL,
    cash            numeric     NOT NULL,
    unrealized_pnl  numeric     NOT NULL,
    high_water_mark numeric     NOT NULL,
    position        bigint      NOT NULL
);
CREATE TABLE IF NOT EXISTS projections.positions
(
    symbol         text PRIMARY KEY,
    quantity       numeric     NOT NULL,
    avg_cost       numeric     NOT NULL,
    last_price     numeric,
    realized_pnl   numeric     NOT NULL,
    fees           numeric     NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS projections.prices
(
    symbol      text PRIMARY KEY,
    price       numeric     NOT NULL,
    at          timestamptz NOT NULL,
    source      text        NOT NULL
);
-- The most recent prices of each symbol (bounded: the projector keeps the newest 500 per symbol).
CREATE TABLE IF NOT EXISTS projections.prices_recent
(
    symbol      text        NOT NULL,
    at          timestamptz NOT NULL,
    price       numeric     NOT NULL,
    source      text        NOT NULL,
    PRIMARY KEY (symbol, at)
);
CREATE TABLE IF NOT EXISTS projections.risk_state
(
    id             smallint PRIMARY KEY CHECK (id = 1),
    halted         boolean     NOT NULL,
    halt_rule      text,
    halt_reason    text,
    changed_at     timestamptz,
    limits         jsonb,
    admitted       bigint      NOT NULL,
    refused        bigint      NOT NULL,
    position       bigint      NOT NULL
);
CREATE TABLE IF NOT EXISTS projections.risk_rejections
(
    position    bigint PRIMARY KEY,
    order_id    uuid        NOT NULL,
    symbol      text        NOT NULL,
    rules       text[]      NOT NULL,
    reasons     jsonb       NOT NULL,
    at          timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS risk_rejections_at_idx ON projections.risk_rejections (at);

-- projector `orders`: every order's life and its fills (trades).
CREATE TABLE IF NOT EXISTS projections.orders
(
    order_id       uuid PRIMARY KEY,
    symbol         text        NOT NULL,
    side           text        NOT NULL,
    quantity       numeric     NOT NULL,
    status         text        NOT NULL,
    reference_price numeric    NOT NULL,
    strategy       text        NOT NULL,
    summary        text        NOT NULL,
    venue          text,
    filled_quantity numeric    NOT NULL,
    avg_fill_price numeric,
    fees           numeric     NOT NULL,
    reason         text,
    proposed_at    timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    correlation_id uuid        NOT NULL,
    position       bigint      NOT NULL,
    last_position  bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_position_idx ON projections.orders (position);
CREATE INDEX IF NOT EXISTS orders_proposed_at_idx ON projections.orders (proposed_at);
CREATE TABLE IF NOT EXISTS projections.fills
(
    position    bigint PRIMARY KEY,
    fill_id     text        NOT NULL,
    order_id    uuid        NOT NULL,
    symbol      text        NOT NULL,
    side        text        NOT NULL,
    quantity    numeric     NOT NULL,
    price       numeric     NOT NULL,
    fee         numeric     NOT NULL,
    venue       text,
    filled_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS fills_filled_at_idx ON projections.fills (filled_at);
CREATE INDEX IF NOT EXISTS fills_order_idx ON projections.fills (order_id);

-- projector `sentiment`: the timeline of scores per token.
CREATE TABLE IF NOT EXISTS projections.sentiment
(
    position    bigint PRIMARY KEY,
    token       text        NOT NULL,
    score       numeric     NOT NULL,
    label       text        NOT NULL,
    confidence  numeric     NOT NULL,
    model       text        NOT NULL,
    source_type text        NOT NULL,
    source_event uuid       NOT NULL,
    at          timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS sentiment_token_at_idx ON projections.sentiment (token, at);

-- projector `llm`: calls, tokens and cost per UTC day, provider, model and task.
CREATE TABLE IF NOT EXISTS projections.llm_usage
(
    day         date        NOT NULL,
    provider    text        NOT NULL,
    model       text        NOT NULL,
    task        text        NOT NULL,
    calls       bigint      NOT NULL,
    failures    bigint      NOT NULL,
    tokens_in   bigint      NOT NULL,
    tokens_out  bigint      NOT NULL,
    cost_usd    numeric     NOT NULL,
    latency_ms_total bigint NOT NULL,
    PRIMARY KEY (day, provider, model, task)
);

-- projector `conversations`: chat messages received and replies sent.
CREATE TABLE IF NOT EXISTS projections.chat_messages
(
    position    bigint PRIMARY KEY,
    chat_id     bigint      NOT NULL,
    direction   text        NOT NULL CHECK (direction IN ('in', 'out')),
    message_id  bigint,
    user_id     bigint,
    username    text,
    trust       text,
    text        text        NOT NULL,
    at          timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_messages_chat_idx ON projections.chat_messages (chat_id, position);

-- projector `backtests`: finished backtest runs with their reports.
CREATE TABLE IF NOT EXISTS projections.backtest_runs
(
    run_id       text PRIMARY KEY,
    strategy     text        NOT NULL,
    total_return double precision NOT NULL,
    sharpe       double precision NOT NULL,
    max_drawdown double precision NOT NULL,
    trades       bigint      NOT NULL,
    final_equity numeric     NOT NULL,
    report       jsonb       NOT NULL,
    parameters   jsonb       NOT NULL,
    at           timestamptz NOT NULL,
    position     bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS backtest_runs_position_idx ON projections.backtest_runs (position);

-- The audit trail reads the events table itself: by correlation id (this index) and by causation id
-- (events_causation_idx).
CREATE INDEX IF NOT EXISTS events_correlation_idx ON events ((metadata ->> 'correlation_id'));
