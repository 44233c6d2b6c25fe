-- +goose Up

-- A BTS webhook is a doorbell: it makes the order due at once. When the
-- order is being polled at that moment, the poll may have read it before the
-- change the webhook announces, so the webhook sets rung instead, and the
-- poll's write makes the order due again at once (clearing rung). A claim
-- clears it too: that claim's read is the one the webhook asked for.
ALTER TABLE bts_orders ADD COLUMN rung boolean NOT NULL DEFAULT false;

-- When each BTS source last got a webhook, and how many: every instance
-- stretches the source's schedule while webhooks flow and restores it when
-- they stop, whichever instance the webhooks reach.
CREATE TABLE bts_webhooks (
    source_id text PRIMARY KEY,
    last_at   timestamptz NOT NULL,
    calls     bigint NOT NULL DEFAULT 0
);

-- +goose Down
DROP TABLE bts_webhooks;
ALTER TABLE bts_orders DROP COLUMN rung;
