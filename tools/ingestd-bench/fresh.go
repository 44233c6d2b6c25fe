package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/sim"
)

// freshResult is the freshness run: the delay from an entry's appearance
// upstream to its receipt by a Kafka consumer, over the steady part.
type freshResult struct {
	Rate           float64 `json:"rate_per_sec"`
	Seconds        float64 `json:"seconds"`
	PollIntervalMs float64 `json:"poll_interval_ms"`
	Events         int     `json:"events"`
	P50Ms          float64 `json:"p50_ms"`
	P99Ms          float64 `json:"p99_ms"`
	MaxMs          float64 `json:"max_ms"`
	// Missing entries never reached the consumer; Duplicates arrived more
	// than once; Unmatched records had an event id of no journal entry.
	Missing    int   `json:"missing"`
	Duplicates int64 `json:"duplicates"`
	Unmatched  int64 `json:"unmatched"`
}

// freshness runs ingestd against a journal growing at a steady rate and
// measures, per entry, the time from its appearance upstream to its receipt
// by an independent franz-go consumer. Receipt comes after Kafka's
// acknowledgement of the write, so the figures are an upper bound of
// appearance-to-acknowledgement.
func (b *bench) freshness(ctx context.Context) (res *freshResult, err error) {
	o := b.o
	backlog := o.freshBacklog
	steady := int(math.Round(o.freshRate * o.freshDur.Seconds()))
	if steady < 1 {
		return nil, fmt.Errorf("--fresh-rate × --fresh-duration gives %d events; need at least one", steady)
	}
	total := backlog + steady

	sch, err := createSchema(ctx, o.databaseURL, "bench_fresh")
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, sch.drop()) }()
	dsn := sch.dsn("ingestd-bench-" + sch.name)
	if err := migrate(ctx, b.bin, dsn); err != nil {
		return nil, err
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(o.partitions), topicName))
	if err != nil {
		return nil, fmt.Errorf("start the in-process broker: %w", err)
	}
	defer cluster.Close()
	broker := cluster.ListenAddrs()[0]

	// The journal starts with only the backlog available (rate zero) and
	// starts growing once ingestd has drained it, so every measured entry
	// appears while ingestd is already running its steady poll loop.
	y, err := sim.NewYandex(sim.YandexConfig{Seed: o.seed + 1, Token: benchToken, Backlog: backlog, MaxEntries: total, Claims: o.claims})
	if err != nil {
		return nil, fmt.Errorf("configure the simulator: %w", err)
	}
	index := make(map[string]int, total)
	for i := range total {
		e := y.Entry(i)
		id := event.ID(event.ProviderYandex, account, e.ClaimID, strconv.FormatInt(e.OperationID, 10), e.ChangeType, strconv.FormatInt(e.Revision, 10))
		index[id] = i
	}
	first := newFirstRequest(y)
	simAddr, stopSim, err := serveSim(ctx, first)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, stopSim()) }()

	cons := &freshConsumer{index: index, recv: make([]time.Time, total), backlog: backlog, done: make(chan struct{})}
	cctx, stopConsumer := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(cons.done)
		cons.err = cons.run(cctx, broker)
	})
	// Stopping twice is harmless, so the deferred stop also covers the
	// early returns.
	defer func() {
		stopConsumer()
		wg.Wait()
	}()

	c, err := startIngestd(b.bin, b.childEnv(dsn, broker, simAddr, "127.0.0.1:0", b.o.compression))
	if err != nil {
		return nil, err
	}
	defer c.Kill()

	if err := waitFirst(ctx, c, first); err != nil {
		return nil, err
	}
	if err := b.waitFor(ctx, c, time.Minute, "ingestd to drain the freshness backlog", func() (bool, error) {
		return cons.backlogGot.Load() >= int64(backlog), cons.failed()
	}); err != nil {
		return nil, err
	}
	y.SetRate(o.freshRate)
	limit := o.freshDur + o.pollInterval + 30*time.Second
	if err := b.waitFor(ctx, c, limit, "every steady event to reach the consumer", func() (bool, error) {
		return cons.steadyGot.Load() >= int64(steady), cons.failed()
	}); err != nil {
		return nil, err
	}
	if _, err := stop(ctx, c); err != nil {
		return nil, err
	}
	stopConsumer()
	wg.Wait()
	if cons.err != nil {
		return nil, cons.err
	}

	res = &freshResult{Rate: o.freshRate, Seconds: o.freshDur.Seconds(), PollIntervalMs: ms(o.pollInterval),
		Duplicates: cons.duplicates, Unmatched: cons.unmatched}
	delays := make([]time.Duration, 0, steady)
	for i := backlog; i < total; i++ {
		if cons.recv[i].IsZero() {
			res.Missing++
			continue
		}
		delays = append(delays, cons.recv[i].Sub(y.AppearedAt(i)))
	}
	slices.Sort(delays)
	res.Events = len(delays)
	if len(delays) > 0 {
		res.P50Ms = ms(percentile(delays, 0.50))
		res.P99Ms = ms(percentile(delays, 0.99))
		res.MaxMs = ms(delays[len(delays)-1])
	}
	return res, nil
}

// waitFor polls cond every 10ms until it holds, failing when cond reports
// an error, ingestd exits, ctx ends or limit passes (see waitProcs).
func (b *bench) waitFor(ctx context.Context, c *child.Process, limit time.Duration, what string, cond func() (bool, error)) error {
	return waitProcs(ctx, []*child.Process{c}, limit, what, cond)
}

// freshConsumer reads the topic from the start and records when each
// journal entry's event first arrived. Only its own goroutine writes recv,
// err and the plain counters; they are read after done is closed.
type freshConsumer struct {
	index   map[string]int
	recv    []time.Time
	backlog int
	done    chan struct{} // closed when run returned
	err     error         // run's result

	backlogGot atomic.Int64
	steadyGot  atomic.Int64
	duplicates int64
	unmatched  int64
}

// failed returns the consumer's error if it stopped on its own.
func (f *freshConsumer) failed() error {
	select {
	case <-f.done:
		if f.err != nil {
			return f.err
		}
		return errors.New("the consumer stopped")
	default:
		return nil
	}
}

func (f *freshConsumer) run(ctx context.Context, broker string) error {
	return consumeTopic(ctx, broker, "freshness", f.record)
}

// consumeTopic reads the bench topic from its start until ctx ends, handing
// every record to onRecord with the time its fetch arrived: the receipt
// time the freshness figures are measured to.
func consumeTopic(ctx context.Context, broker, what string, onRecord func(*kgo.Record, time.Time)) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumeTopics(topicName),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return fmt.Errorf("create the %s consumer: %w", what, err)
	}
	defer cl.Close()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			ferr = errors.Join(ferr, fmt.Errorf("fetch %s/%d: %w", t, p, err))
		})
		if ferr != nil {
			return ferr
		}
		fetches.EachRecord(func(r *kgo.Record) { onRecord(r, now) })
	}
}

// record matches r to its journal entry by event id: the ce_id header, or
// the payload's event_id when the header is missing.
func (f *freshConsumer) record(r *kgo.Record, now time.Time) {
	id := ""
	for _, h := range r.Headers {
		if h.Key == "ce_id" {
			id = string(h.Value)
			break
		}
	}
	if id == "" {
		if ev, err := event.ParsePayload(r.Value); err == nil {
			id = ev.ID
		}
	}
	i, ok := f.index[id]
	if !ok {
		f.unmatched++
		return
	}
	if !f.recv[i].IsZero() {
		f.duplicates++
		return
	}
	f.recv[i] = now
	if i < f.backlog {
		f.backlogGot.Add(1)
	} else {
		f.steadyGot.Add(1)
	}
}

// percentile is the nearest-rank p-quantile of sorted d.
func percentile(d []time.Duration, p float64) time.Duration {
	k := int(math.Ceil(p*float64(len(d)))) - 1
	return d[max(0, min(k, len(d)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
