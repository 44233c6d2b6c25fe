// Package status says what each configured source is doing, from what
// PostgreSQL holds: which instance runs it, its cursor and when it last
// committed, how many events it ingested, whether it halted and why, and
// whether its polling is paused for the outbox backlog.
// `ingestd sources list` and the admin API's GET /v1/sources show it.
package status

import (
	"context"
	"fmt"
	"time"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/sources"
)

// EveryInstance is the Instance of a BTS source: its watch-list is polled by
// every instance, each claiming due orders.
const EveryInstance = "every instance"

// Source is one source's status.
type Source struct {
	ID       string `json:"id"`
	Provider string `json:"provider"`
	Account  string `json:"account"`
	// Instance is the instance holding the source's lease ("" when none
	// does now), or EveryInstance for a BTS source.
	Instance string `json:"instance"`
	// Cursor is the journal position ("" for BTS, or before the first
	// page).
	Cursor string `json:"cursor"`
	// LastCommitAt is when the source last committed a page or a change;
	// null before the first.
	LastCommitAt *time.Time `json:"last_commit_at"`
	// LastCommitAgeSeconds is the time since LastCommitAt.
	LastCommitAgeSeconds *float64   `json:"last_commit_age_seconds"`
	EventsIngested       int64      `json:"events_ingested"`
	Halted               bool       `json:"halted"`
	HaltedAt             *time.Time `json:"halted_at"`
	HaltedReason         string     `json:"halted_reason"`
	// Paused is true while polling waits for the outbox backlog to drain
	// below INGESTD_OUTBOX_MAX_BACKLOG. The outbox is shared, so every
	// source of the deployment pauses together; PausedReason says by how
	// much the backlog is over.
	Paused       bool   `json:"paused"`
	PausedReason string `json:"paused_reason"`
}

// Cursors is what status needs of the cursor store.
type Cursors interface {
	Sources(ctx context.Context) ([]cursor.State, error)
}

// Leases is what status needs of the lease store.
type Leases interface {
	List(ctx context.Context) ([]lease.State, error)
}

// Backlog is what status needs of the outbox: the estimate the pollers
// check before each page, so that status says paused exactly when they are.
type Backlog interface {
	BacklogEstimate(ctx context.Context) (int64, error)
}

var (
	_ Cursors = (*cursor.Store)(nil)
	_ Leases  = (*lease.Store)(nil)
	_ Backlog = (*outbox.Store)(nil)
)

// Collector reads source status from the stores.
type Collector struct {
	Cursors Cursors
	Leases  Leases
	Outbox  Backlog
	// MaxBacklog is INGESTD_OUTBOX_MAX_BACKLOG (0: no bound, never paused).
	MaxBacklog int64
}

// Collect returns the status of srcs, in their order, as of now.
func (c Collector) Collect(ctx context.Context, srcs []sources.Source, now time.Time) ([]Source, error) {
	var pausedReason string
	if c.MaxBacklog > 0 {
		n, err := c.Outbox.BacklogEstimate(ctx)
		if err != nil {
			return nil, fmt.Errorf("source status: %w", err)
		}
		if n >= c.MaxBacklog {
			pausedReason = fmt.Sprintf("outbox backlog of about %d rows is over its bound of %d (INGESTD_OUTBOX_MAX_BACKLOG); polling resumes when the publisher catches up", n, c.MaxBacklog)
		}
	}
	ls, err := c.Leases.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("source status: %w", err)
	}
	holders := map[string]string{}
	for _, l := range ls {
		if l.Live {
			holders[l.Name] = l.Holder
		}
	}
	// One query for every source's state, however many sources there are;
	// a source that never committed has none.
	states, err := c.Cursors.Sources(ctx)
	if err != nil {
		return nil, fmt.Errorf("source status: %w", err)
	}
	byID := make(map[string]cursor.State, len(states))
	for _, st := range states {
		byID[st.SourceID] = st
	}
	out := make([]Source, 0, len(srcs))
	for _, src := range srcs {
		st := byID[src.ID()]
		s := Source{
			ID: src.ID(), Provider: src.Provider, Cursor: st.Cursor, EventsIngested: st.EventsTotal,
			Halted: st.HaltedAt != nil, HaltedAt: utc(st.HaltedAt), HaltedReason: st.HaltedReason,
			Paused: pausedReason != "", PausedReason: pausedReason,
		}
		switch src.Provider {
		case sources.ProviderYandex:
			s.Account, s.Instance = src.Yandex.Account, holders[lease.Source(src.ID())]
		case sources.ProviderBTS:
			s.Account, s.Instance = src.BTS.Account, EveryInstance
		}
		if !st.UpdatedAt.IsZero() {
			at := st.UpdatedAt.UTC()
			age := now.Sub(at).Seconds()
			s.LastCommitAt, s.LastCommitAgeSeconds = &at, &age
		}
		out = append(out, s)
	}
	return out, nil
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
