-- +goose Up

-- The BTS watch-list: BTS Express has no journal, so ingestd polls each
-- tracked order for its current status on a schedule. One row per order per
-- source ("bts/<account>").
--
-- Operators add orders with `ingestd bts track`, the admin API, or plain SQL:
--
--   INSERT INTO bts_orders (source_id, order_id) VALUES ('bts/default', '12345') ON CONFLICT DO NOTHING;
--
-- A new row is active and due at once; its first poll publishes the order's
-- current status.
CREATE TABLE bts_orders (
    source_id       text        NOT NULL,
    -- BTS's orderId. Documented ids are integers; any 1-64 characters of
    -- [A-Za-z0-9_-] are accepted, so that an id is always safe in a URL
    -- query, a log line and a Kafka key.
    order_id        text        NOT NULL CHECK (order_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    -- active: polled on schedule; terminal: reached a final status (its
    -- last event is published); not_found: BTS answered 404 (no event).
    state           text        NOT NULL DEFAULT 'active'
                                CHECK (state IN ('active', 'terminal', 'not_found')),
    -- The last status seen, NULL before the first successful poll. Code 0
    -- is a cancelled order.
    status_code     integer,
    status_name     text,
    -- Status changes seen so far. Every write of an observation is a
    -- compare-and-set on it, and it is part of each event's id, so an
    -- observation is recorded (and its event published) at most once, in
    -- order, however many replicas poll.
    change_count    bigint      NOT NULL DEFAULT 0,
    -- When the order is due next; NULL once it left the active set. A claim
    -- moves it to the end of the claim, so a crashed poller's orders come
    -- back by themselves.
    next_poll_at    timestamptz DEFAULT now(),
    -- End of the current claim, NULL when unclaimed; claim_token identifies
    -- the claim so that only its holder releases it early.
    claimed_until   timestamptz,
    claim_token     bigint,
    last_polled_at  timestamptz,
    last_changed_at timestamptz,
    added_at        timestamptz NOT NULL DEFAULT now(),
    -- Consecutive failed polls and the last failure, cleared by a success.
    error_count     integer     NOT NULL DEFAULT 0,
    last_error      text,
    last_error_at   timestamptz,
    PRIMARY KEY (source_id, order_id),
    CHECK ((state = 'active') = (next_poll_at IS NOT NULL))
);

-- Due orders of a source, earliest first: the claim query walks this index
-- and stops after its batch, whatever the size of the watch-list. Orders
-- that left the active set are not in it.
CREATE INDEX bts_orders_due_idx ON bts_orders (source_id, next_poll_at) WHERE state = 'active';

-- The BTS status dictionary (GET /v1/status/index) as last fetched, per
-- source because names follow the source's language header. It gives events
-- their status names and the poller the allowed transitions.
CREATE TABLE bts_statuses (
    source_id   text        NOT NULL,
    code        integer     NOT NULL,
    name        text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    -- next_possible_statuses as BTS sent them; some (900, 1000) are never
    -- defined themselves.
    next_codes  integer[]   NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, code)
);

-- +goose Down
DROP TABLE bts_statuses;
DROP TABLE bts_orders;
