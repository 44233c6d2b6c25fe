-- +goose Up

-- One lease per single-writer role: "source:<source id>" for each poller,
-- "publisher" for the outbox relay. The epoch is a fencing token: it grows by
-- one at every acquisition, and every write a holder makes is conditional on
-- its epoch still being the current one, so a paused or partitioned former
-- holder can never write after a newer one took over. Expiry uses
-- PostgreSQL's clock only, so pods' clocks never have to agree.
CREATE TABLE leases (
    name        text        PRIMARY KEY,
    -- NULL once released: the next instance may take it at once.
    holder      text,
    epoch       bigint      NOT NULL,
    expires_at  timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    renewed_at  timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE leases;
