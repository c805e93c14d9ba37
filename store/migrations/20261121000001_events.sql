-- The event store. Columns of postgres-es's `events` table, plus Jarvis's global order:
--   position     assigned at insert (identity), unique;
--   txid         the writing transaction (xid8), for gap-safe reads (see docs/adr/0001-gap-safe-order.md);
--   recorded_at  wall-clock time of the write (never used for decisions);
--   event_id     UUIDv7, the bus message id (`ce-id`, `Nats-Msg-Id`).
CREATE TABLE IF NOT EXISTS events
(
    aggregate_type text                     NOT NULL,
    aggregate_id   text                     NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                     NOT NULL,
    event_version  text                     NOT NULL,
    payload        json                     NOT NULL,
    metadata       json                     NOT NULL,
    position       bigint GENERATED ALWAYS AS IDENTITY,
    txid           xid8                     NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at    timestamptz              NOT NULL DEFAULT now(),
    event_id       uuid                     NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_position_idx ON events (position);
CREATE UNIQUE INDEX IF NOT EXISTS events_event_id_idx ON events (event_id);
CREATE INDEX IF NOT EXISTS events_txid_position_idx ON events (txid, position);

-- postgres-es's snapshot table, for aggregates that grow.
CREATE TABLE IF NOT EXISTS snapshots
(
    aggregate_type   text                             NOT NULL,
    aggregate_id     text                             NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                             NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Checkpoints of readers of the store (the outbox relay, projectors): the last (txid, position) handled.
CREATE TABLE IF NOT EXISTS checkpoints
(
    name       text        PRIMARY KEY,
    txid       xid8        NOT NULL,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Wake tailing readers once per inserting statement; NOTIFY is delivered at commit.
CREATE OR REPLACE FUNCTION jarvis_notify_events() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('jarvis_events', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS events_notify ON events;
CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION jarvis_notify_events();
