package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/service"
	"github.com/ingestd/ingestd/internal/sources"
)

// fakeHeartbeats reports a fixed spread of held sources per instance.
type fakeHeartbeats map[string]int

func (f fakeHeartbeats) Heartbeat(context.Context, string, time.Duration) (map[string]int, error) {
	return f, nil
}
func (f fakeHeartbeats) Forget(context.Context, string) error { return nil }

// idleLeased is a leased source that holds nothing.
type idleLeased struct{ service.Base }

func (*idleLeased) Start(context.Context) error            { return nil }
func (*idleLeased) SetAdmit(func() (done func(), ok bool)) {}
func (*idleLeased) Holding() bool                          { return false }

// TestBalanceWhileSourcesAreBeingTaken: sources admitted and still taking
// their lease count as held for admission, but only sources really held
// can be given up; a balance that counted the ones being taken as surplus
// once sliced past the held ones and panicked with the set's lock held,
// which hung every runner (seen in CI).
func TestBalanceWhileSourcesAreBeingTaken(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Lease = lease.Config{TTL: 3 * time.Second, Holder: "me"}
	s := newSourceSet(cfg, func(sources.Source) (service.Service, error) { return nil, nil },
		fakeHeartbeats{"me": 0, "a": 0, "b": 0}, zaptest.NewLogger(t), prometheus.NewRegistry())
	for _, id := range []string{"yandex/x", "yandex/y", "yandex/z"} {
		s.leased[id] = &idleLeased{}
		s.trying[id] = true
	}
	require.NotPanics(t, func() { s.balance(context.Background()) })
	s.mu.Lock()
	defer s.mu.Unlock()
	require.Equal(t, 3, s.held(), "the sources being taken still count")
}
