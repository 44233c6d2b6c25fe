package poller

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/retry"
	"github.com/ingestd/ingestd/internal/upstream"
)

// HaltError is why a source halted: an error that only an operator can
// fix. The stored cursor (or watch-list) is untouched.
type HaltError struct {
	SourceID string
	Err      error
}

func (e *HaltError) Error() string {
	return fmt.Sprintf("source %s halted: %v", e.SourceID, e.Err)
}

func (e *HaltError) Unwrap() error { return e.Err }

// Source is one source's share of the loop machinery. Both loops report
// through it, so that every source counts its requests and failures, waits
// out a failure, and halts the same way.
type Source struct {
	id     string
	log    *zap.Logger
	m      *Metrics
	halts  Halts
	record time.Duration
	halted atomic.Pointer[HaltError]
}

// NewSource returns the bookkeeping of source id. recordTimeout bounds
// writing a halt record once the loop's context may have ended.
func NewSource(id string, log *zap.Logger, m *Metrics, halts Halts, recordTimeout time.Duration) *Source {
	return &Source{id: id, log: log, m: m, halts: halts, record: recordTimeout}
}

// ID is the source id, "<provider>/<account>".
func (s *Source) ID() string { return s.id }

// Log is the source's logger.
func (s *Source) Log() *zap.Logger { return s.log }

// Start marks the source running: its gauges are reset, and a halt record
// left by an earlier run is cleared. A halt lasts until the source is
// started again: by a restart of ingestd, or, for a journal source, when
// an operator's `ingestd cursor set` or `rewind` takes its lease over and
// hands it back.
func (s *Source) Start(ctx context.Context) {
	s.halted.Store(nil)
	s.m.halted.WithLabelValues(s.id).Set(0)
	s.m.backoff.WithLabelValues(s.id).Set(0)
	s.m.paused.WithLabelValues(s.id).Set(0)
	if err := s.halts.ClearHalt(ctx, s.id); err != nil && ctx.Err() == nil {
		// Only `ingestd cursor show` reads the record; the source runs.
		s.log.Warn("could not clear the halt record of an earlier run", zap.Error(err))
	}
}

// Stopped marks the source no longer running in this process, so that a
// halted source that lost its lease to another instance stops reporting
// the halt here.
func (s *Source) Stopped() {
	s.m.halted.WithLabelValues(s.id).Set(0)
	s.m.backoff.WithLabelValues(s.id).Set(0)
}

// OK counts a request that was answered with something usable.
func (s *Source) OK() { s.m.requests.WithLabelValues(s.id, "ok").Inc() }

// Failed counts a failed request by its class (an unclassified error counts
// as retry) and returns the class, on which the caller acts.
func (s *Source) Failed(err error) upstream.Class {
	class := upstream.ClassOf(err)
	s.m.requests.WithLabelValues(s.id, class.String()).Inc()
	s.m.errors.WithLabelValues(s.id, class.String()).Inc()
	return class
}

// Unusable counts a request answered with something that cannot be
// published (an entry or status that does not normalize): the request
// succeeded, but its answer is retried like a transient failure.
func (s *Source) Unusable() {
	s.m.requests.WithLabelValues(s.id, "ok").Inc()
	s.m.errors.WithLabelValues(s.id, upstream.Retry.String()).Inc()
}

// Backoff shows the wait before the next request after a failure; 0 when
// healthy.
func (s *Source) Backoff(d time.Duration) {
	s.m.backoff.WithLabelValues(s.id).Set(d.Seconds())
}

// PollingDelay shows the wait the last answer asked for before the next
// request.
func (s *Source) PollingDelay(d time.Duration) {
	s.m.delay.WithLabelValues(s.id).Set(d.Seconds())
}

// TooEarly counts a 429 answer to a request sent sooner than the previous
// answer asked.
func (s *Source) TooEarly() { s.m.tooEarly.WithLabelValues(s.id).Inc() }

// Retry logs that op failed with err, shows the wait d, and waits it (or
// until a wake channel fires). It reports whether ctx is still live.
func (s *Source) Retry(ctx context.Context, op string, err error, d time.Duration, wake ...<-chan struct{}) bool {
	s.Backoff(d)
	s.log.Warn(op+" failed; retrying", zap.Error(err), zap.Duration("backoff", d))
	return retry.Sleep(ctx, d, wake...)
}

// Stored counts what a commit appended to the outbox.
func (s *Source) Stored(a outbox.Appended) {
	s.m.ingested.WithLabelValues(s.id).Add(float64(len(a.Inserted)))
	s.m.duplicates.WithLabelValues(s.id).Add(float64(a.Duplicates))
}

// PageCommitted counts a journal page committed in took.
func (s *Source) PageCommitted(took time.Duration) {
	s.m.commitSecs.WithLabelValues(s.id).Observe(took.Seconds())
	s.m.pages.WithLabelValues(s.id).Inc()
}

// UnknownStatus counts an event published with canonical status unknown,
// by its raw provider status.
func (s *Source) UnknownStatus(raw string) {
	s.m.unknown.WithLabelValues(s.id, boundedLabel(raw)).Inc()
}

// Halt records that the source stopped on cause, which only an operator can
// fix: the ingestd_source_halted gauge, one error line in the log (the only
// one: callers do not log the halt again), and the reason stored with the
// source for `ingestd cursor show`. It returns the halt.
func (s *Source) Halt(ctx context.Context, cause error) *HaltError {
	h := &HaltError{SourceID: s.id, Err: cause}
	s.log.Error("source halted: retrying cannot fix this; fix the cause, then restart the source (see IngestdSourceHalted in docs/operations.md)",
		zap.Error(cause))
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.record)
	defer cancel()
	if err := s.halts.Halt(hctx, s.id, cause.Error()); err != nil {
		s.log.Warn("could not store the halt record; the gauge and the log line above still show it", zap.Error(err))
	}
	// Published last, so that whoever sees the halt sees it recorded.
	s.m.halted.WithLabelValues(s.id).Set(1)
	s.halted.Store(h)
	return h
}

// Halted returns the halt of the current run, or nil while the source runs.
func (s *Source) Halted() *HaltError { return s.halted.Load() }
