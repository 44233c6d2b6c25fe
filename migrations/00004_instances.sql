-- +goose Up

-- One row per running ingestd instance, renewed as a heartbeat. The
-- instances spread the sources' leases by it: each holds at most
-- ceil(sources / live instances). An instance is live while its row was
-- renewed within the lease TTL; expiry uses PostgreSQL's clock only.
CREATE TABLE instances (
    holder     text        PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE instances;
