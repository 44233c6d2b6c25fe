package daemon_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
		codes := make([]int, len(evs))
		for i, ev := range evs {
			require.Equal(t, int64(i+1), ev.Revision, "order %s: revisions count changes in order", id)
			code, err := strconv.Atoi(ev.ProviderStatus)
			require.NoError(t, err)
			codes[i] = code
		}
		require.NoError(t, b.CheckObserved(id, codes))
		require.True(t, evs[len(evs)-1].Terminal, "order %s ends with its terminal status", id)
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

// TestWebhookFloodDoesNotSlowThePollers floods the webhook endpoint with
// 10,000 forged or malformed calls while a Yandex journal grows and BTS
// orders are polled: every call is refused with its status, the journal is
// still requested at its pace (the largest gap between two journal
// requests during the flood is measured against the one before it), and
// BTS orders are still claimed on time.
func TestWebhookFloodDoesNotSlowThePollers(t *testing.T) {
	t.Parallel()
	const (
		flood   = 10_000
		hookTok = "webhook-token-of-the-default-account"
	)
	y, err := sim.NewYandex(sim.YandexConfig{Seed: 91, Token: token, Backlog: 10, Rate: 100})
	require.NoError(t, err)
	s := newStack(t, sim.YandexConfig{Seed: 90, Backlog: 10})
	var (
		mu       sync.Mutex
		arrivals []time.Time
	)
	ysrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrivals = append(arrivals, time.Now())
		mu.Unlock()
		y.ServeHTTP(w, r)
	}))
	t.Cleanup(ysrv.Close)
	s.cfg.Yandex.BaseURL = ysrv.URL
	b, err := sim.NewBTS(sim.BTSConfig{Seed: 14, Login: "ingestd", Password: "pw", Orders: 200, Speed: 27000, TokenTTL: time.Hour})
	require.NoError(t, err)
	bsrv := httptest.NewServer(b)
	t.Cleanup(bsrv.Close)
	s.cfg.BTS.BaseURL = bsrv.URL
	s.cfg.BTS.Login = "ingestd"
	s.cfg.BTS.Password = secret.New("pw")
	s.cfg.BTS.WebhookToken = secret.New(hookTok)
	s.cfg.BTS.Schedule.IdlePoll = 50 * time.Millisecond
	iv, err := bts.ParseIntervals("100=6h,800=4h,1100=1h,default=6h")
	require.NoError(t, err)
	s.cfg.BTS.Schedule.Intervals = iv.Scaled(27000)
	s.cfg.BTS.Schedule.Rate = 500
	_, err = s.store.Watchlist.Track(context.Background(), "bts/default", b.Orders())
	require.NoError(t, err)
	r := s.start(t)
	url := "http://" + r.d.HTTPAddr() + "/v1/bts/webhook"

	// maxGap is the largest gap between journal requests in [from, to).
	maxGap := func(from, to time.Time) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		var gap time.Duration
		var prev time.Time
		for _, at := range arrivals {
			if at.Before(from) || !at.Before(to) {
				continue
			}
			if !prev.IsZero() {
				gap = max(gap, at.Sub(prev))
			}
			prev = at
		}
		return gap
	}
	require.Eventually(t, func() bool { return metric(t, r, "ingestd_bts_polls_total", nil) > 50 }, 30*time.Second, 20*time.Millisecond)
	quietFrom := time.Now()
	<-time.After(3 * time.Second)
	floodFrom := time.Now()
	lagSum0 := metric(t, r, "ingestd_bts_claim_lag_seconds_sum", nil)
	lagN0 := metric(t, r, "ingestd_bts_claim_lag_seconds_count", nil)

	kinds := []struct {
		header      map[string]string
		contentType string
		body        string
		status      int
	}{
		{map[string]string{"token": "forged-forged-forged-forged"}, "application/x-www-form-urlencoded", "text=%7B%22orderId%22%3A1%7D", http.StatusUnauthorized},
		{nil, "application/json", `{"orderId":1}`, http.StatusUnauthorized},
		{map[string]string{"token": hookTok}, "application/json", `{"orderId":{}}`, http.StatusBadRequest},
		{map[string]string{"Authorization": "Bearer " + hookTok}, "application/x-www-form-urlencoded", "text=", http.StatusBadRequest},
	}
	var (
		wg    sync.WaitGroup
		wrong atomic.Int64
		jobs  = make(chan int)
	)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for range 16 {
		wg.Go(func() {
			for i := range jobs {
				k := kinds[i%len(kinds)]
				req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(k.body))
				if err != nil {
					wrong.Add(1)
					continue
				}
				req.Header.Set("Content-Type", k.contentType)
				for h, v := range k.header {
					req.Header.Set(h, v)
				}
				resp, err := client.Do(req)
				if err != nil {
					wrong.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != k.status {
					wrong.Add(1)
				}
			}
		})
	}
	for i := range flood {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	floodTo := time.Now()
	require.Zero(t, wrong.Load(), "every call refused with its status")

	before, during := maxGap(quietFrom, floodFrom), maxGap(floodFrom, floodTo)
	lag := (metric(t, r, "ingestd_bts_claim_lag_seconds_sum", nil) - lagSum0) / max(metric(t, r, "ingestd_bts_claim_lag_seconds_count", nil)-lagN0, 1)
	t.Logf("%d refused calls in %s; largest gap between journal requests: %s before, %s during the flood; mean BTS claim lag during it: %.0f ms",
		flood, floodTo.Sub(floodFrom).Round(time.Millisecond), before.Round(time.Millisecond), during.Round(time.Millisecond), lag*1000)
	require.Less(t, during, max(4*before, time.Second), "the journal is polled at its pace during the flood")
	require.Less(t, lag, 1.0, "BTS orders are claimed on time during the flood")
	require.Zero(t, metric(t, r, "ingestd_bts_webhook_calls_total", map[string]string{"outcome": "accepted"}))
}
