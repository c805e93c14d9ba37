-- The memory read model (agents/src/memory/projector.rs), built from `MemoryStored` and `MemoryForgotten` events
-- by a checkpointed projector (checkpoint `memory-projector` in `checkpoints`). Rebuildable from the events.

-- One row per live memory. `tsv` is generated from the text for full-text recall (GIN index); `embedding` is a
-- unit vector from the configured embedding provider (NULL until computed, or when none is configured), and
-- `embedding_model` names the model that made it: vectors of different models are never compared.
CREATE TABLE IF NOT EXISTS memories
(
    memory_id       uuid PRIMARY KEY,
    user_id         bigint      NOT NULL,
    text            text        NOT NULL,
    source_event    uuid        NOT NULL,
    source_type     text        NOT NULL,
    trust           text        NOT NULL CHECK (trust IN ('owner', 'allowlisted', 'public')),
    at              timestamptz NOT NULL,
    position        bigint      NOT NULL,
    tsv             tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    embedding       real[],
    embedding_model text
);
CREATE INDEX IF NOT EXISTS memories_tsv_idx ON memories USING gin (tsv);
CREATE INDEX IF NOT EXISTS memories_user_idx ON memories (user_id, at DESC);
CREATE INDEX IF NOT EXISTS memories_unembedded_idx ON memories (position) WHERE embedding IS NULL;

-- Users that ever had a memory stored (recall for anyone else is a bad request).
CREATE TABLE IF NOT EXISTS memory_users
(
    user_id bigint PRIMARY KEY,
    first_position bigint NOT NULL
);

-- Vectors by model and text, so that a rebuild does not ask the provider again (a NULL embedding: the provider
-- refused that text). Entries of forgotten texts are deleted with them.
CREATE TABLE IF NOT EXISTS memory_embeddings
(
    model     text   NOT NULL,
    text_hash text   NOT NULL,
    embedding real[],
    PRIMARY KEY (model, text_hash)
);
