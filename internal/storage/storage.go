// Package storage opens ingestd's PostgreSQL state as one set of stores on
// one connection pool: the daemon, the operator commands and the tools all
// need several of them (a poller writes cursors and the outbox, `ingestd
// cursor show` reads cursors and leases), and all share the pool.
package storage

import (
	"context"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/watchlist"
)

// Stores are the store packages on one database.
type Stores struct {
	DB        *pg.DB
	Leases    *lease.Store
	Outbox    *outbox.Store
	Cursors   *cursor.Store
	Watchlist *watchlist.Store
}

// Open connects to the database of cfg, checks that it is migrated (see
// pg.Open) and returns its stores. Close closes them.
func Open(ctx context.Context, cfg pg.Config) (*Stores, error) {
	db, err := pg.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return New(db), nil
}

// New returns the stores of an open database.
func New(db *pg.DB) *Stores {
	ob := outbox.NewStore(db)
	return &Stores{
		DB:        db,
		Leases:    lease.NewStore(db),
		Outbox:    ob,
		Cursors:   cursor.NewStore(db, ob),
		Watchlist: watchlist.NewStore(db, ob),
	}
}

// Close closes the connection pool.
func (s *Stores) Close() { s.DB.Close() }
