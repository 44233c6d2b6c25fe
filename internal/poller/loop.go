package poller

import (
	"errors"
	"fmt"
	"time"

	"github.com/ingestd/ingestd/internal/retry"
)

// DefaultCommitTimeout is Loop.CommitTimeout's default.
const DefaultCommitTimeout = 10 * time.Second

// Loop is the part of a poller's configuration both loops share.
type Loop struct {
	// Backoff bounds the waits after a failure (INGESTD_BACKOFF_*); zero
	// means retry.DefaultConfig().
	Backoff retry.Config
	// CommitTimeout bounds committing what was already fetched when
	// shutdown began: it is committed rather than dropped. Default
	// DefaultCommitTimeout; the daemon derives it from
	// INGESTD_SHUTDOWN_TIMEOUT.
	CommitTimeout time.Duration
	// MaxBacklog pauses polling while more than this many outbox rows wait
	// for Kafka (INGESTD_OUTBOX_MAX_BACKLOG), so that an outage of Kafka
	// cannot grow the table without bound; polling resumes by itself once
	// the publisher catches up. 0 disables the bound.
	MaxBacklog int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// SetDefaults fills the fields whose zero value means "the default".
func (l *Loop) SetDefaults() {
	if l.Backoff == (retry.Config{}) {
		l.Backoff = retry.DefaultConfig()
	}
	if l.CommitTimeout == 0 {
		l.CommitTimeout = DefaultCommitTimeout
	}
	if l.Now == nil {
		l.Now = time.Now
	}
}

// Validate reports every problem, naming the environment variables.
func (l Loop) Validate() error {
	var errs []error
	if l.CommitTimeout <= 0 {
		errs = append(errs, fmt.Errorf("INGESTD_SHUTDOWN_TIMEOUT: must be positive (the commit timeout is derived from it), got %s", l.CommitTimeout))
	}
	if l.MaxBacklog < 0 {
		errs = append(errs, fmt.Errorf("INGESTD_OUTBOX_MAX_BACKLOG: must be 0 (no bound) or positive, got %d", l.MaxBacklog))
	}
	errs = append(errs, l.Backoff.Validate())
	return errors.Join(errs...)
}
