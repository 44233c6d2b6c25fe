-- +goose Up

-- Which instance holds an order's claim (its heartbeat row in instances),
-- so that the claims of an instance that died are free as soon as its
-- heartbeat expires, not at the end of the claim. NULL for claims taken
-- without an instance (tools, tests): those last until claimed_until.
ALTER TABLE bts_orders ADD COLUMN claimed_by text;

CREATE INDEX bts_orders_claimed ON bts_orders (source_id, claimed_by) WHERE claimed_until IS NOT NULL;

-- +goose Down
DROP INDEX bts_orders_claimed;
ALTER TABLE bts_orders DROP COLUMN claimed_by;
