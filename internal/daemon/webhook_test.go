package daemon_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/watchlist"
)

// TestWebhooksRingTheDoorbell is issue 13's acceptance on the simulator:
// 1,000 tracked orders and 500 known only through webhooks walk their
// lifecycles while BTS calls the daemon's webhook endpoint, losing 20% of
// the calls, sending 10% twice, delaying (reordering) them, and forging
// some (wrong token, a status the order does not have, an unknown order).
// Each status change reaches Kafka exactly once, in order per order, every
// order reaches its final status, and the untracked ones were added by
// their webhooks.
func TestWebhooksRingTheDoorbell(t *testing.T) {
	t.Parallel()
	const (
		tracked  = 1000
		hookOnly = 500
		speed    = 27000
		hookTok  = "webhook-token-of-the-default-account"
	)
	s := newStack(t, sim.YandexConfig{Seed: 81, Backlog: 100})
	port := freePort(t)
	s.cfg.HTTP.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	b, err := sim.NewBTS(sim.BTSConfig{
		Seed: 13, Login: "ingestd", Password: "pw", Orders: tracked + hookOnly, Speed: speed, TokenTTL: time.Hour,
		Webhooks: sim.BTSWebhookConfig{
			URL:       fmt.Sprintf("http://127.0.0.1:%d/v1/bts/webhook", port),
			Token:     hookTok,
			Loss:      0.2,
			Duplicate: 0.1,
			Forged:    0.02,
			MaxDelay:  300 * time.Millisecond,
		},
	})
	require.NoError(t, err)
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	s.cfg.BTS.BaseURL = srv.URL
	s.cfg.BTS.Login = "ingestd"
	s.cfg.BTS.Password = secret.New("pw")
	s.cfg.BTS.WebhookToken = secret.New(hookTok)
	iv, err := bts.ParseIntervals("100=6h,800=4h,1100=1h,default=6h")
	require.NoError(t, err)
	s.cfg.BTS.Schedule.Intervals = iv.Scaled(speed)
	s.cfg.BTS.Schedule.Rate = 1000
	s.cfg.BTS.Schedule.Concurrency = 16
	s.cfg.BTS.Schedule.IdlePoll = 50 * time.Millisecond
	// Lifecycles sped up 27,000 times call at thousands per second, far
	// above any real BTS account.
	s.cfg.Webhook.Rate = 100_000

	ctx := context.Background()
	orders := b.Orders()
	_, err = s.store.Watchlist.Track(ctx, "bts/default", orders[:tracked])
	require.NoError(t, err)
	r := s.start(t)

	hooks, stopHooks := context.WithCancel(ctx)
	defer stopHooks()
	hooksDone := make(chan error, 1)
	go func() { hooksDone <- b.RunWebhooks(hooks) }()

	select {
	case err := <-hooksDone:
		require.NoError(t, err, "every change was called")
	case <-time.After(120 * time.Second):
		t.Fatal("the simulator did not finish its webhooks")
	}
	s.waitDone(t, 100)
	// Orders known only through webhooks whose every call was lost cannot
	// be known; the seed makes that none or nearly none.
	known := tracked
	for _, id := range orders[tracked:] {
		if len(b.WebhooksDelivered(id)) > 0 {
			known++
		}
	}
	require.Greater(t, known, tracked+hookOnly*9/10)
	require.Eventually(t, func() bool {
		c, err := s.store.Watchlist.Count(ctx, "bts/default")
		return err == nil && c[watchlist.Active] == 0 && c[watchlist.Terminal] == int64(known)
	}, 120*time.Second, 50*time.Millisecond, "every known order reaches its final status")
	require.Eventually(t, func() bool { st, err := s.store.Outbox.Backlog(ctx); return err == nil && st.Rows == 0 }, 60*time.Second, 50*time.Millisecond)

	stats, err := s.store.Outbox.Stats(ctx)
	require.NoError(t, err)
	recs := s.kafka.ReadTopic(t, s.cfg.Kafka.Topic, int(stats.Rows), 60*time.Second)
	require.Len(t, recs, int(stats.Rows), "every outbox row reached Kafka once")
	ids := map[string]bool{}
	byOrder := map[string][]event.Event{}
	for _, rec := range recs {
		require.False(t, ids[rec.Header("ce_id")], "duplicate %s", rec.Header("ce_id"))
		ids[rec.Header("ce_id")] = true
		ev, err := event.ParsePayload(rec.Value)
		require.NoError(t, err)
		if ev.Provider == event.ProviderBTS {
			byOrder[ev.OrderID] = append(byOrder[ev.OrderID], ev)
		}
	}
	require.Len(t, byOrder, known, "events of real orders only: a forged call never invents one")
	for id, evs := range byOrder {
		history := b.History(id)
		pos := 0
		for i, ev := range evs {
			require.Equal(t, int64(i+1), ev.Revision, "order %s: revisions count changes in order", id)
			code, err := strconv.Atoi(ev.ProviderStatus)
			require.NoError(t, err)
			for pos < len(history) && history[pos].Code != code {
				pos++
			}
			require.Less(t, pos, len(history), "order %s: status %d follows the previous one in its history", id, code)
			pos++
		}
		require.True(t, evs[len(evs)-1].Terminal, "order %s ends with its final status", id)
	}

	require.Positive(t, b.WebhooksLost())
	require.Positive(t, b.WebhooksDuplicated())
	require.Positive(t, b.WebhooksForged())
	accepted := metric(t, r, "ingestd_bts_webhook_calls_total", map[string]string{"outcome": "accepted"})
	refused := metric(t, r, "ingestd_bts_webhook_calls_total", map[string]string{"outcome": "unauthorized"})
	require.Positive(t, refused, "forged tokens are refused")
	// Every call is answered, accepted or refused (a call the simulator
	// gave up on may still have been answered after it).
	failed := b.WebhooksFailed()
	require.InDelta(t, float64(b.WebhooksSent()), accepted+refused, float64(failed)-refused+1, "failed %d", failed)
	tracked2 := metric(t, r, "ingestd_bts_webhook_orders_total", map[string]string{"result": "tracked"})
	require.GreaterOrEqual(t, tracked2, float64(known-tracked), "webhooks added the orders nobody tracked")
	t.Logf("%d orders (%d known only through webhooks); webhooks: %d sent, %d lost, %d duplicated, %d forged; %d accepted, %d refused; %d orders added by webhooks; %d BTS track calls",
		known, known-tracked, b.WebhooksSent(), b.WebhooksLost(), b.WebhooksDuplicated(), b.WebhooksForged(), int(accepted), int(refused), int(tracked2), b.TotalCalls())
}
