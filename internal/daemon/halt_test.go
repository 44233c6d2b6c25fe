package daemon_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
)

// withBTS points the stack's daemon at a simulated BTS with password pw.
func (s *stack) withBTS(t *testing.T, pw string) *sim.BTS {
	t.Helper()
	b, err := sim.NewBTS(sim.BTSConfig{Seed: 5, Login: "ingestd", Password: "pw", Orders: 3})
	require.NoError(t, err)
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	s.cfg.BTS.BaseURL = srv.URL
	s.cfg.BTS.Login = "ingestd"
	s.cfg.BTS.Password = secret.New(pw)
	s.cfg.BTS.Schedule.IdlePoll = 50 * time.Millisecond
	return b
}

// observe makes the stack's daemon log to the test and to the returned
// observer.
func (s *stack) observe(t *testing.T) *observer.ObservedLogs {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	s.log = zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	return logs
}

// TestHaltIsLoggedOnce halts both sources of one daemon (the Yandex token
// and the BTS password are rejected): each halt is one error line naming
// its source, recorded with the source, and the daemon keeps running and
// stops cleanly. Nothing else is logged at error level.
func TestHaltIsLoggedOnce(t *testing.T) {
	t.Parallel()
	s := newStack(t, sim.YandexConfig{Seed: 21, Backlog: 100})
	s.cfg.Yandex.Token = secret.New("not-the-token")
	s.withBTS(t, "not-the-password")
	logs := s.observe(t)
	r := s.start(t)

	ctx := context.Background()
	halted := func(source string) bool {
		st, err := s.store.Cursors.Source(ctx, source)
		return err == nil && st.HaltedAt != nil
	}
	require.Eventually(t, func() bool { return halted("yandex/default") && halted(bts.SourceID("default")) },
		30*time.Second, 10*time.Millisecond, "both sources halt")
	r.stop(t)

	bySource := map[string]int{}
	for _, e := range logs.FilterLevelExact(zapcore.ErrorLevel).All() {
		source, _ := e.ContextMap()["source"].(string)
		require.Contains(t, e.Message, "source halted", "the only error lines are the halts: %s %v", e.Message, e.ContextMap())
		bySource[source]++
	}
	require.Equal(t, map[string]int{"yandex/default": 1, "bts/default": 1}, bySource, "each halt is logged once")
}

// TestHaltRecordIsClearedWhenTheSourceStarts: a halt record left by an
// earlier run (here a BTS source whose credentials were since fixed) is
// cleared when the source starts again, so `ingestd cursor show` does not
// report a halt that is over.
func TestHaltRecordIsClearedWhenTheSourceStarts(t *testing.T) {
	t.Parallel()
	s := newStack(t, sim.YandexConfig{Seed: 22, Backlog: 100})
	s.withBTS(t, "pw")
	ctx := context.Background()
	for _, src := range []string{"yandex/default", "bts/default"} {
		require.NoError(t, s.store.Cursors.Halt(ctx, src, "auth: HTTP 401 (an earlier run)"))
	}
	s.start(t)
	require.Eventually(t, func() bool {
		for _, src := range []string{"yandex/default", "bts/default"} {
			st, err := s.store.Cursors.Source(ctx, src)
			if err != nil || st.HaltedAt != nil {
				return false
			}
		}
		return true
	}, 30*time.Second, 10*time.Millisecond, "the halt records of both sources are cleared")
}
