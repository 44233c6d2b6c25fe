package poller_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ingestd/ingestd/internal/poller"
	"github.com/ingestd/ingestd/internal/promtest"
	"github.com/ingestd/ingestd/internal/retry"
	"github.com/ingestd/ingestd/internal/upstream"
)

func TestLoopDefaultsAndValidate(t *testing.T) {
	t.Parallel()
	var l poller.Loop
	l.SetDefaults()
	require.Equal(t, retry.DefaultConfig(), l.Backoff)
	require.Equal(t, poller.DefaultCommitTimeout, l.CommitTimeout)
	require.NotNil(t, l.Now)
	require.NoError(t, l.Validate())

	tests := []struct {
		name    string
		mutate  func(*poller.Loop)
		wantEnv string
	}{
		{"negative commit timeout", func(l *poller.Loop) { l.CommitTimeout = -time.Second }, "INGESTD_SHUTDOWN_TIMEOUT"},
		{"negative backlog", func(l *poller.Loop) { l.MaxBacklog = -1 }, "INGESTD_OUTBOX_MAX_BACKLOG"},
		{"bad backoff", func(l *poller.Loop) { l.Backoff.Max = time.Millisecond }, retry.EnvMax},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := poller.Loop{}
			l.SetDefaults()
			tc.mutate(&l)
			err := l.Validate()
			require.Error(t, err)
			require.True(t, strings.HasPrefix(err.Error(), tc.wantEnv+": "), "%v", err)
		})
	}
}

// halts records halt records in memory.
type halts struct {
	mu      sync.Mutex
	reasons map[string]string
}

func (h *halts) Halt(_ context.Context, source, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reasons[source] = reason
	return nil
}

func (h *halts) ClearHalt(_ context.Context, source string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.reasons, source)
	return nil
}

// TestSourceHaltsOnceAndClearsOnStart: a halt is the gauge, one error
// line and the record; starting the source again clears all three, and
// failures are counted by class.
func TestSourceHaltsOnceAndClearsOnStart(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := poller.NewMetrics(reg)
	core, logs := observer.New(zapcore.DebugLevel)
	h := &halts{reasons: map[string]string{"yandex/a": "an earlier run"}}
	s := poller.NewSource("yandex/a", zap.New(core), m, h, time.Second)
	ctx := context.Background()
	halted := func() float64 { return gauge(t, reg, "ingestd_source_halted") }

	s.Start(ctx)
	require.Empty(t, h.reasons, "starting clears an earlier halt record")
	require.Nil(t, s.Halted())

	cause := &upstream.Error{Class: upstream.Auth, Op: "fetch journal page", StatusCode: 401}
	require.Equal(t, upstream.Auth, s.Failed(cause))
	require.Equal(t, upstream.Retry, s.Failed(errors.New("unclassified")), "an unclassified error is retried, never halts")
	halt := s.Halt(ctx, cause)
	require.Equal(t, halt, s.Halted())
	require.Equal(t, "yandex/a", halt.SourceID)
	require.ErrorIs(t, halt, cause)
	require.Equal(t, cause.Error(), h.reasons["yandex/a"])
	require.Equal(t, 1.0, halted())
	require.Len(t, logs.FilterLevelExact(zapcore.ErrorLevel).All(), 1)

	s.Stopped()
	require.Equal(t, 0.0, halted(), "a source that stopped here no longer reports its halt here")
	s.Start(ctx)
	require.Nil(t, s.Halted())
	require.Empty(t, h.reasons)
	require.Len(t, logs.FilterLevelExact(zapcore.ErrorLevel).All(), 1, "nothing else is logged as an error")
}

// gauge returns the value of name's single series in reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	v, series := promtest.Sum(t, reg, name, nil)
	require.Equal(t, 1, series, "%s has one series", name)
	return v
}
