package daemon_test

import (
	"context"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/watchlist"
)

// TestBTSBesideYandexEndToEnd runs both sources in one daemon: BTS orders
// on the watch-list walk their lifecycles to terminal states, and Kafka
// receives each observed status change once, in order per order, beside
// the Yandex journal's events.
func TestBTSBesideYandexEndToEnd(t *testing.T) {
	t.Parallel()
	const (
		journal = 2000
		orders  = 1000
		speed   = 27000 // days-long lifecycles in seconds
	)
	s := newStack(t, sim.YandexConfig{Seed: 17, Backlog: journal})
	b, err := sim.NewBTS(sim.BTSConfig{Seed: 5, Login: "ingestd", Password: "pw", Orders: orders, Speed: speed, TokenTTL: 2 * time.Second})
	require.NoError(t, err)
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	s.cfg.BTS.BaseURL = srv.URL
	s.cfg.BTS.Login = "ingestd"
	s.cfg.BTS.Password = secret.New("pw")
	iv, err := bts.ParseIntervals("100=6h,800=4h,1100=1h,default=6h")
	require.NoError(t, err)
	s.cfg.BTS.Schedule.Intervals = iv.Scaled(speed)
	s.cfg.BTS.Schedule.Rate = 500
	s.cfg.BTS.Schedule.IdlePoll = 50 * time.Millisecond

	ctx := context.Background()
	added, err := s.store.Watchlist.Track(ctx, "bts/default", b.Orders())
	require.NoError(t, err)
	require.Len(t, added, orders)
	s.start(t)

	require.Eventually(t, func() bool {
		c, err := s.store.Watchlist.Count(ctx, "bts/default")
		return err == nil && c[watchlist.Active] == 0
	}, 90*time.Second, 50*time.Millisecond, "every order reaches a terminal state")
	s.waitDone(t, journal)

	stats, err := s.store.Outbox.Stats(ctx)
	require.NoError(t, err)
	recs := kafkatest.ReadTopic(t, s.kafka.Addr, s.cfg.Kafka.Topic, int(stats.Rows), 60*time.Second)
	require.Len(t, recs, int(stats.Rows), "every outbox row reached Kafka once")

	ids := map[string]bool{}
	byOrder := map[string][]event.Event{}
	yandexEvents := 0
	for _, r := range recs {
		require.False(t, ids[r.Header("ce_id")], "duplicate %s", r.Header("ce_id"))
		ids[r.Header("ce_id")] = true
		ev, err := event.ParsePayload(r.Value)
		require.NoError(t, err)
		if ev.Provider == event.ProviderYandex {
			yandexEvents++
			continue
		}
		require.Equal(t, "bts:"+ev.OrderID, r.Key)
		require.Equal(t, "/ingestd/bts/default", r.Header("ce_source"))
		byOrder[ev.OrderID] = append(byOrder[ev.OrderID], ev)
	}
	require.Equal(t, journal, yandexEvents)
	require.Len(t, byOrder, orders)
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
}
