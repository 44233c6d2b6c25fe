package sim

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestYandexPollingDelay: every answer asks for the configured delay, and a
// request sooner than that after the previous answer is refused with 429
// (which asks for the delay too, and restarts it); one after it is served.
func TestYandexPollingDelay(t *testing.T) {
	t.Parallel()
	const delay = 300 * time.Millisecond
	y, srv := newServer(t, YandexConfig{Seed: 1, Token: "tok", Backlog: 10, PollingDelay: delay})

	r := do(t, srv, request{token: "tok"})
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "300", r.header.Get(HeaderPollingDelay))
	answered := time.Now()

	r = do(t, srv, request{token: "tok"})
	if time.Since(answered) < delay {
		require.Equal(t, http.StatusTooManyRequests, r.status, "a request sooner than asked is refused")
		require.Equal(t, "300", r.header.Get(HeaderPollingDelay))
		require.Equal(t, "too_many_requests", decodeError(t, r.body).Code)
		require.EqualValues(t, 1, y.TooEarly())
	}

	<-time.After(delay + 50*time.Millisecond)
	before := y.TooEarly()
	r = do(t, srv, request{token: "tok"})
	require.Equal(t, http.StatusOK, r.status, "a request after the delay is served: %s", r.body)
	require.Equal(t, before, y.TooEarly())

	// Without the setting there is neither header nor pacing.
	y2, srv2 := newServer(t, YandexConfig{Seed: 1, Token: "tok", Backlog: 10})
	for range 3 {
		r = do(t, srv2, request{token: "tok"})
		require.Equal(t, http.StatusOK, r.status)
		require.Empty(t, r.header.Values(HeaderPollingDelay))
	}
	require.Zero(t, y2.TooEarly())

	_, err := NewYandex(YandexConfig{PollingDelay: -time.Second})
	require.ErrorContains(t, err, "PollingDelay")
}
