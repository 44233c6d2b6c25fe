-- +goose Up

-- One row per upstream source ("yandex/<account>", "bts/<account>"): the
-- opaque cursor exactly as the upstream returned it. It is only ever written
-- in the same transaction as the outbox rows the page produced.
CREATE TABLE source_cursors (
    source_id     text        PRIMARY KEY,
    -- NULL until the first page is committed: the first request is sent
    -- without a cursor.
    cursor        text,
    events_total  bigint      NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- Set when the source stopped on an error that needs an operator (bad
    -- cursor, rejected credentials); cleared by the next committed page.
    halted_at     timestamptz,
    halted_reason text
);

-- Every cursor change, for audit and rewind.
CREATE TABLE cursor_history (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id   text        NOT NULL,
    cursor      text        NOT NULL,
    prev_cursor text,
    event_count integer     NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL DEFAULT 'ingestd',
    reason      text
);
CREATE INDEX cursor_history_source_idx ON cursor_history (source_id, id);

-- The outbox sequence counter. Every committing transaction bumps this single
-- row, which both allocates its range of seq values and serializes commits, so
-- seq order is commit order. A plain sequence would not give that: two
-- sources committing concurrently could make a lower seq visible after a
-- higher one, and a per-partition watermark would then skip it.
CREATE TABLE outbox_seq (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_seq bigint  NOT NULL
);
INSERT INTO outbox_seq (id, last_seq) VALUES (true, 0);

-- Normalized events waiting for (or kept after) publication to Kafka. The
-- partition is chosen at commit time with the key hash, so a row's place in
-- Kafka never depends on when it is published.
CREATE TABLE outbox (
    seq        bigint      PRIMARY KEY,
    event_id   uuid        NOT NULL UNIQUE,
    source_id  text        NOT NULL,
    partition  integer     NOT NULL,
    msg_key    text        NOT NULL,
    ce_type    text        NOT NULL,
    ce_source  text        NOT NULL,
    ce_subject text        NOT NULL,
    ce_time    timestamptz NOT NULL,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_created_at_idx ON outbox (created_at);

-- The Kafka topic the outbox is written for, and its partition count at the
-- time. Rows carry partitions computed with this count; switching topics
-- needs an explicit operator action instead of silently re-partitioning.
CREATE TABLE outbox_target (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    topic      text    NOT NULL,
    partitions integer NOT NULL CHECK (partitions > 0)
);

-- Publish progress: every outbox row of a partition with seq <= last_seq has
-- been acknowledged by Kafka. One row per partition instead of a per-row
-- "published" flag keeps each event to a single write in PostgreSQL.
CREATE TABLE publish_progress (
    partition    integer     PRIMARY KEY,
    last_seq     bigint      NOT NULL DEFAULT 0,
    published_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE publish_progress;
DROP TABLE outbox_target;
DROP TABLE outbox;
DROP TABLE outbox_seq;
DROP TABLE cursor_history;
DROP TABLE source_cursors;
