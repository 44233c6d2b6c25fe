package watchlist

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ingestd/ingestd/internal/outbox"
)

// Observation is the result of one successful poll of an order.
type Observation struct {
	OrderID string
	// ChangeCount is the stored change count the poll started from (the
	// claim's); the observation is recorded only if it is still current.
	ChangeCount int64
	// Token is the claim's token: an unchanged status or a 404 is recorded
	// only while no other claim holds the order.
	Token int64
	// NotFound reports that BTS answered 404: the order leaves the active
	// set without an event.
	NotFound bool
	// Code and Name are the observed status.
	Code int
	Name string
	// Terminal reports that Code ends the order's lifecycle: after its
	// event, the order leaves the active set.
	Terminal bool
	// NextPollIn is when to poll again, from now, if the order stays active.
	NextPollIn time.Duration
	// Event is the outbox row announcing the change, built for change count
	// ChangeCount+1. It must be set when Code differs from the stored
	// status; an observation without one is only ever recorded as
	// unchanged.
	Event *outbox.Row
}

// Outcome is what recording an observation did.
type Outcome int

// Observation outcomes.
const (
	// Stale: the order's change count (or claim) moved since the poll
	// began, or the order is no longer active or tracked; nothing was
	// written.
	Stale Outcome = iota
	// Changed: the status changed; the order was updated and the event
	// inserted into the outbox in the same transaction.
	Changed
	// Unchanged: same status; the order was rescheduled.
	Unchanged
	// MarkedNotFound: the order is now not_found.
	MarkedNotFound
)

// String names the outcome for logs and metric labels.
func (o Outcome) String() string {
	switch o {
	case Stale:
		return "stale"
	case Changed:
		return "changed"
	case Unchanged:
		return "unchanged"
	case MarkedNotFound:
		return "not_found"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// changedSQL records status changes: compare-and-set on the change count,
// and only where the code really differs from the stored one. An order
// rung (a webhook arrived) during its poll is due again at once.
const changedSQL = `
UPDATE bts_orders AS o
SET status_code = v.code, status_name = nullif(v.name, ''), change_count = o.change_count + 1,
    state = CASE WHEN v.terminal THEN 'terminal' ELSE 'active' END,
    next_poll_at = CASE WHEN v.terminal THEN NULL WHEN o.rung THEN now() ELSE now() + make_interval(secs => v.next_secs) END,
    rung = false, claimed_until = NULL, claim_token = NULL, last_polled_at = now(), last_changed_at = now(),
    error_count = 0, last_error = NULL, last_error_at = NULL
FROM unnest($2::text[], $3::int8[], $4::int4[], $5::text[], $6::bool[], $7::float8[])
    AS v(order_id, expected, code, name, terminal, next_secs)
WHERE o.source_id = $1 AND o.order_id = v.order_id AND o.state = 'active'
  AND o.change_count = v.expected AND o.status_code IS DISTINCT FROM v.code
RETURNING o.order_id`

// unchangedSQL reschedules orders whose status did not change, as long as
// the poll is still current: same change count, and no other claim.
const unchangedSQL = `
UPDATE bts_orders AS o
SET next_poll_at = CASE WHEN o.rung THEN now() ELSE now() + make_interval(secs => v.next_secs) END,
    rung = false, claimed_until = NULL, claim_token = NULL,
    last_polled_at = now(), error_count = 0, last_error = NULL, last_error_at = NULL
FROM unnest($2::text[], $3::int8[], $4::int8[], $5::int4[], $6::float8[]) AS v(order_id, expected, token, code, next_secs)
WHERE o.source_id = $1 AND o.order_id = v.order_id AND o.state = 'active'
  AND o.change_count = v.expected AND (o.claim_token IS NULL OR o.claim_token = v.token)
  AND o.status_code IS NOT DISTINCT FROM v.code
RETURNING o.order_id`

// notFoundSQL takes orders BTS does not know out of the active set.
const notFoundSQL = `
UPDATE bts_orders AS o
SET state = 'not_found', next_poll_at = NULL, claimed_until = NULL, claim_token = NULL,
    last_polled_at = now(), last_error = 'not found upstream (HTTP 404)', last_error_at = now()
FROM unnest($2::text[], $3::int8[], $4::int8[]) AS v(order_id, expected, token)
WHERE o.source_id = $1 AND o.order_id = v.order_id AND o.state = 'active'
  AND o.change_count = v.expected AND (o.claim_token IS NULL OR o.claim_token = v.token)
RETURNING o.order_id`

// RecordObservation records one observation; see RecordObservations.
func (s *Store) RecordObservation(ctx context.Context, sourceID string, o Observation) (Outcome, outbox.Appended, error) {
	out, c, err := s.RecordObservations(ctx, sourceID, []Observation{o})
	if err != nil {
		return Stale, outbox.Appended{}, err
	}
	return out[0], c, nil
}

// RecordObservations records a batch of observations in ONE transaction
// and returns each one's outcome, in order, with the outbox commit of the
// events inserted (to wake the publisher). For each observation:
//
//   - a status different from the stored one updates the order
//     (compare-and-set on its change count) and inserts its event into the
//     outbox, both or neither; a terminal status also takes the order out
//     of the active set, after that last event;
//   - the stored status just reschedules the order;
//   - a 404 marks the order not_found, without an event.
//
// An observation whose change count (or claim) is no longer current is
// stale and writes nothing. Batching lets one transaction, and one outbox
// sequence allocation, serve many polls; an order may appear only once per
// batch (later repeats are stale).
func (s *Store) RecordObservations(ctx context.Context, sourceID string, obs []Observation) ([]Outcome, outbox.Appended, error) {
	outcomes := make([]Outcome, len(obs))
	if len(obs) == 0 {
		return outcomes, outbox.Appended{}, nil
	}
	var (
		ch, un, nf columns
		seen       = make(map[string]bool, len(obs))
		index      = make(map[string]int, len(obs))
	)
	for i := range obs {
		o := &obs[i]
		if seen[o.OrderID] {
			continue
		}
		seen[o.OrderID] = true
		index[o.OrderID] = i
		if o.NotFound {
			nf.add(o)
			continue
		}
		if o.Event != nil {
			ch.add(o)
		}
		un.add(o)
	}

	var commit outbox.Appended
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		clear(outcomes)
		commit = outbox.Appended{}
		if len(ch.ids) > 0 {
			changed, err := collectIDs(tx.Query(ctx, changedSQL, sourceID, ch.ids, ch.expected, ch.codes, ch.names, ch.terminal, ch.nextSecs))
			if err != nil {
				return fmt.Errorf("record bts status changes: %w", err)
			}
			for _, id := range changed {
				outcomes[index[id]] = Changed
			}
			// Events go in observation order; outbox.Append allocates their
			// seqs from the one outbox counter, like every other writer.
			rows := make([]outbox.Row, 0, len(changed))
			for i := range obs {
				if outcomes[i] == Changed {
					rows = append(rows, *obs[i].Event)
				}
			}
			if commit, err = s.outbox.Append(ctx, tx, sourceID, rows, true); err != nil {
				return err
			}
		}
		if len(un.ids) > 0 {
			got, err := collectIDs(tx.Query(ctx, unchangedSQL, sourceID, un.ids, un.expected, un.tokens, un.codes, un.nextSecs))
			if err != nil {
				return fmt.Errorf("reschedule unchanged bts orders: %w", err)
			}
			for _, id := range got {
				if outcomes[index[id]] == Stale {
					outcomes[index[id]] = Unchanged
				}
			}
		}
		if len(nf.ids) > 0 {
			got, err := collectIDs(tx.Query(ctx, notFoundSQL, sourceID, nf.ids, nf.expected, nf.tokens))
			if err != nil {
				return fmt.Errorf("mark bts orders not found: %w", err)
			}
			for _, id := range got {
				outcomes[index[id]] = MarkedNotFound
			}
		}
		return nil
	})
	if err != nil {
		return nil, outbox.Appended{}, fmt.Errorf("record bts observations of %s: %w", sourceID, err)
	}
	return outcomes, commit, nil
}

// columns holds observations as the parallel arrays unnest takes.
type columns struct {
	ids      []string
	expected []int64
	tokens   []int64
	codes    []int32
	names    []string
	terminal []bool
	nextSecs []float64
}

func (c *columns) add(o *Observation) {
	c.ids = append(c.ids, o.OrderID)
	c.expected = append(c.expected, o.ChangeCount)
	c.tokens = append(c.tokens, o.Token)
	c.codes = append(c.codes, int32(o.Code))
	c.names = append(c.names, o.Name)
	c.terminal = append(c.terminal, o.Terminal)
	c.nextSecs = append(c.nextSecs, max(o.NextPollIn, 0).Seconds())
}

// collectIDs reads a column of order ids.
func collectIDs(rows pgx.Rows, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
