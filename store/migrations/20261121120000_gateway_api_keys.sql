-- API keys minted by a gateway admin (keys from the configuration are not stored here). Only the SHA-256 of
-- a key is kept; the key itself is shown once, when minted.
CREATE TABLE IF NOT EXISTS gateway_api_keys (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    key_sha256 text NOT NULL UNIQUE,
    role       text NOT NULL CHECK (role IN ('viewer', 'operator')),
    scopes     text[] NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The event explorer looks stories up by correlation id.
CREATE INDEX IF NOT EXISTS events_correlation_idx ON events ((metadata ->> 'correlation_id'));
