package publish

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/failpoint"
	"github.com/ingestd/ingestd/internal/kafkaconn"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/retry"
)

// Store is what the publisher needs of the outbox.
type Store interface {
	Target(ctx context.Context, topic string, partitions int) (int, error)
	Watermarks(ctx context.Context) ([]int64, error)
	Pending(ctx context.Context, wm []int64, limit int) ([]outbox.Row, error)
	MarkPublished(ctx context.Context, l lease.Lease, marks map[int]int64) error
	Row(ctx context.Context, seq int64) (*outbox.Row, error)
	LastSeq(ctx context.Context) (int64, error)
	Prune(ctx context.Context, retention time.Duration, limit int) (int64, error)
	Backlog(ctx context.Context) (outbox.Backlog, error)
}

// Headers ingestd adds to every record besides the CloudEvents ones.
const (
	// HeaderSeq carries the row's outbox sequence number, so that what
	// Kafka holds can be matched to the outbox after a crash.
	HeaderSeq = "ingestd_seq"
	// HeaderEpoch carries the publisher lease epoch that wrote the record.
	HeaderEpoch = "ingestd_epoch"
)

// pruneBatch bounds one DELETE so pruning never holds long locks.
const pruneBatch = 10000

// ErrTopicMissing means the topic does not exist and may not be created.
var ErrTopicMissing = errors.New("kafka topic does not exist")

// Publisher relays outbox rows to Kafka.
type Publisher struct {
	cfg    Config
	store  Store
	log    *zap.Logger
	m      *metrics
	conn   *kafkaconn.Settings
	codec  kafka.Compression
	client *kafka.Client
	// producer is replaced after every write of unknown outcome and
	// whenever a partition's leader moved. It and the fields below are
	// used only by Run's goroutine.
	producer *kafka.Client
	// ptransport is the producer's transport, fenced by the current lease.
	ptransport *kafka.Transport
	// parts is what this lease term knows of each partition.
	parts []partState
	// wm is the in-memory watermark per partition: ahead of the stored one
	// by the acknowledgements not yet recorded. nil until the term's first
	// read-back loaded it.
	wm []int64
	// memFrom is the seq from which rows may be taken from mem: every row
	// below it is known to be published. 0 means "read the outbox".
	memFrom int64
	mem     memQueue
	// bufs are the buffers of the last write, kept for the next one only
	// when every produce request of it was answered: after a failure,
	// kafka-go may still be encoding a request from them.
	bufs *writeBufs

	// partitions is the partition count rows are assigned with (recorded in
	// the outbox target); partitionIDs is 0..partitions-1 for the balancer.
	// Both are set once by Prepare.
	partitions   int
	partitionIDs []int

	// access is the Kafka access failure that stops publishing now, if any;
	// /readyz reports it. Written by Run's goroutine, read by probes.
	accessMu sync.Mutex
	access   error
	// prepared is set once Prepare succeeded; probes read it.
	prepared atomic.Bool

	wake chan struct{}
}

// partState is what the publisher knows of one partition in a lease term.
type partState struct {
	// readBack is set when the partition's tail must be read from Kafka
	// before anything more is written to it: at the start of a term, and
	// after a write of unknown outcome.
	readBack bool
	// settleAt is when a write of unknown outcome can no longer land (the
	// failure plus WriteTimeout, which bounds how long the broker may still
	// act on the request): the read-back waits for it, or the write could
	// land after it and be sent twice; and no successor may take over
	// before it.
	settleAt time.Time
	// retryAt is when the partition is tried again after a failed write or
	// read-back; the other partitions carry on meanwhile.
	retryAt time.Time
	backoff *retry.Backoff
}

// New opens a publisher and prepares it (see Open and Prepare).
func New(ctx context.Context, cfg Config, store Store, log *zap.Logger, reg prometheus.Registerer) (*Publisher, error) {
	p, err := Open(cfg, store, log, reg)
	if err != nil {
		return nil, err
	}
	if err := p.Prepare(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// Open checks cfg (filling in the defaults of zero Backoff and Now), loads
// its TLS and SASL settings and registers the metrics. It does not contact
// Kafka: Prepare does, and the publisher is usable only after it succeeded.
func Open(cfg Config, store Store, log *zap.Logger, reg prometheus.Registerer) (*Publisher, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	conn, err := cfg.Conn.Load()
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	for _, w := range conn.Warnings() {
		log.Warn(w)
	}
	p := &Publisher{
		cfg:    cfg,
		store:  store,
		log:    log,
		m:      newMetrics(reg),
		conn:   conn,
		codec:  codecs[cfg.Compression],
		client: &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: 10 * time.Second, Transport: conn.Transport(5*time.Second, nil)},
		wake:   make(chan struct{}, 1),
	}
	return p, nil
}

// Prepare checks the topic (creating it when allowed and missing) and
// records the outbox target, which fixes the partition count events are
// assigned with. A missing topic that may not be created is ErrTopicMissing;
// an access failure is a *kafkaconn.AccessError, and is also reported by
// AccessError until a later Kafka operation succeeds. Prepare may be
// called again after a failure; once it succeeded, it does nothing.
func (p *Publisher) Prepare(ctx context.Context) error {
	if p.partitions > 0 {
		return nil
	}
	have, err := p.ensureTopic(ctx)
	if err != nil {
		p.noteAccess(err)
		return err
	}
	n, err := p.store.Target(ctx, p.cfg.Topic, have)
	if err != nil {
		return err
	}
	if n != have {
		p.log.Warn("topic has more partitions than the outbox was written for; new partitions stay unused so per-shipment order holds",
			zap.String("topic", p.cfg.Topic), zap.Int("topic_partitions", have), zap.Int("used_partitions", n))
	}
	p.noteSuccess("DESCRIBE", "CREATE")
	p.partitionIDs = make([]int, n)
	for i := range p.partitionIDs {
		p.partitionIDs[i] = i
	}
	p.partitions = n
	p.prepared.Store(true)
	return nil
}

// newProducer builds the client that produces to Kafka over transport.
// Each write is one produce request per partition (see write): kafka-go's
// Writer would add its own batching (a goroutine, a timer and a
// BatchSize-long message array per partition and write) and, with retries,
// could write a batch twice (segmentio/kafka-go#1427). Here every failure
// comes back to write and step, which know whether it may have landed.
func (p *Publisher) newProducer(transport *kafka.Transport) *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(p.cfg.Brokers...), Timeout: p.cfg.WriteTimeout, Transport: transport}
}

// ensureTopic returns the topic's partition count, creating the topic first
// when it is missing and CreateTopic allows it.
func (p *Publisher) ensureTopic(ctx context.Context) (int, error) {
	n, err := topicPartitions(ctx, p.cfg, p.conn)
	if err != nil || n > 0 {
		return n, err
	}
	if !p.cfg.CreateTopic {
		return 0, fmt.Errorf("%w: %q on %v; create it, or set INGESTD_KAFKA_CREATE_TOPIC=true to let ingestd create it", ErrTopicMissing, p.cfg.Topic, p.cfg.Brokers)
	}
	res, err := p.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: p.cfg.Topic, NumPartitions: p.cfg.Partitions, ReplicationFactor: p.cfg.ReplicationFactor,
	}}})
	if err != nil {
		return 0, fmt.Errorf("create topic %q: %w", p.cfg.Topic, p.conn.Translate(err, "CREATE", p.cfg.Topic))
	}
	if err := res.Errors[p.cfg.Topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return 0, fmt.Errorf("create topic %q: %w", p.cfg.Topic, p.conn.Translate(err, "CREATE", p.cfg.Topic))
	}
	p.log.Info("created topic", zap.String("topic", p.cfg.Topic), zap.Int("partitions", p.cfg.Partitions))
	// Metadata can lag creation for a moment on a real cluster.
	last := ErrTopicMissing
	for deadline := p.cfg.Now().Add(30 * time.Second); p.cfg.Now().Before(deadline); {
		n, err := topicPartitions(ctx, p.cfg, p.conn)
		if err == nil && n > 0 {
			return n, nil
		}
		if err != nil {
			last = err
		}
		if !retry.Sleep(ctx, 200*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
	return 0, fmt.Errorf("topic %q not visible after creation: %w", p.cfg.Topic, last)
}

// Ping checks that a broker answers for the topic right now, and that no
// access failure stops publishing; /readyz uses it. It dials afresh because
// the producer's transport serves metadata from a cache, which would report
// a dead cluster as healthy for a while.
func (p *Publisher) Ping(ctx context.Context) error {
	if _, err := topicPartitions(ctx, p.cfg, p.conn); err != nil {
		return err
	}
	if err := p.AccessError(); err != nil {
		return err
	}
	if !p.prepared.Load() {
		return errors.New("the topic is not checked yet (see the log)")
	}
	return nil
}

// AccessError returns the Kafka access failure (authentication,
// authorization, TLS) that stops this publisher now, or nil.
func (p *Publisher) AccessError() error {
	p.accessMu.Lock()
	defer p.accessMu.Unlock()
	return p.access
}

// noteAccess records an access failure: it is counted, logged once when it
// starts or changes, and reported by AccessError until an operation shows
// it fixed (see noteSuccess). Other errors are ignored.
func (p *Publisher) noteAccess(err error) {
	var ae *kafkaconn.AccessError
	if !errors.As(err, &ae) {
		return
	}
	p.m.accessErrors.WithLabelValues(ae.Kind).Inc()
	p.accessMu.Lock()
	prev := p.access
	p.access = ae
	p.accessMu.Unlock()
	if prev == nil || prev.Error() != ae.Error() {
		p.log.Error("kafka refused access; nothing is published until it is fixed (retrying with backoff)",
			zap.String("kind", ae.Kind), zap.String("topic", p.cfg.Topic), zap.String("principal", ae.Principal), zap.Error(ae))
	}
}

// noteSuccess records that Kafka allowed the operations ops: it clears a
// recorded access failure that they prove fixed (any authentication or
// TLS failure, since the connection was made; an authorization failure
// only of one of ops, since another ACL may still be missing), and logs
// the recovery once.
func (p *Publisher) noteSuccess(ops ...string) {
	p.accessMu.Lock()
	ae, _ := p.access.(*kafkaconn.AccessError)
	fixed := ae != nil && (ae.Kind != kafkaconn.KindAuthorization || slices.Contains(ops, ae.Op))
	if fixed {
		p.access = nil
	}
	p.accessMu.Unlock()
	if fixed {
		p.log.Info("kafka access restored", zap.String("topic", p.cfg.Topic), zap.String("was", ae.Kind))
	}
}

// CheckTopic reports whether the brokers answer and the topic exists (or
// may be created at start); `ingestd check-config` uses it.
func CheckTopic(ctx context.Context, cfg Config) error {
	conn, err := cfg.Conn.Load()
	if err != nil {
		return err
	}
	n, err := topicPartitions(ctx, cfg, conn)
	switch {
	case err != nil:
		return err
	case n == 0 && !cfg.CreateTopic:
		return fmt.Errorf("%w: %q; create it, or set INGESTD_KAFKA_CREATE_TOPIC=true", ErrTopicMissing, cfg.Topic)
	}
	return nil
}

// topicPartitions asks the brokers for the topic's partition count and
// returns 0 when the topic does not exist. It uses a fresh transport because
// the producer's caches metadata, which would report a dead cluster as healthy
// for a while; and kafka.Client's metadata request, because the one a
// kafka-go Conn sends allows auto-creation, which on a cluster with
// auto.create.topics.enable would create the topic with broker defaults.
func topicPartitions(ctx context.Context, cfg Config, conn *kafkaconn.Settings) (int, error) {
	tr := conn.Transport(2*time.Second, nil)
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: 5 * time.Second, Transport: tr}
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{cfg.Topic}})
	if err != nil {
		return 0, fmt.Errorf("no broker of %v answers for topic %q: %w", cfg.Brokers, cfg.Topic, conn.Translate(err, "DESCRIBE", cfg.Topic))
	}
	for _, t := range md.Topics {
		if t.Name != cfg.Topic || errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
			continue
		}
		if t.Error != nil {
			return 0, fmt.Errorf("metadata of topic %q: %w", cfg.Topic, conn.Translate(t.Error, "DESCRIBE", cfg.Topic))
		}
		return len(t.Partitions), nil
	}
	return 0, nil
}

// Partition returns the partition for a record key: Kafka's default
// (murmur2) key hash, the same as the Java client's, so every event of one
// shipment goes to one partition.
func (p *Publisher) Partition(key string) int {
	return kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(key)}, p.partitionIDs...)
}

// memQueue holds rows committed by pollers in this process, handed over so
// that they are published without being read back from PostgreSQL. It is
// only a fast path: whenever it cannot prove it holds exactly the next rows,
// the publisher reads the outbox instead.
type memQueue struct {
	mu       sync.Mutex
	batches  []outbox.Appended // ordered by FirstSeq
	rows     int
	overflow bool
	// active is true while this process runs the publisher (holds its
	// lease). Otherwise nothing would take the queue: another instance
	// publishes from the outbox, and queued rows would pin their pages'
	// memory for nothing.
	active bool
}

// memBatches bounds the queue to this many BatchSize worth of rows.
const memBatches = 4

// Committed hands over a committed page's rows and wakes the publisher. It
// never blocks: when the queue is full, this commit and every later one are
// left out of it (they are in the outbox). The publisher still takes what
// is queued from memory, then reads the outbox until it has caught up.
func (p *Publisher) Committed(c outbox.Appended) {
	if len(c.Inserted) > 0 {
		q := &p.mem
		q.mu.Lock()
		switch {
		case !q.active:
		case q.overflow || q.rows+len(c.Inserted) > memBatches*p.cfg.BatchSize:
			q.overflow = true
		default:
			// Commits arrive almost always in seq order; two sources'
			// notifications may cross.
			i := len(q.batches)
			for i > 0 && q.batches[i-1].FirstSeq > c.FirstSeq {
				i--
			}
			q.batches = slices.Insert(q.batches, i, c)
			q.rows += len(c.Inserted)
		}
		q.mu.Unlock()
	}
	p.Notify()
}

// memHandoffGrace is how long the publisher waits for the hand-off of rows
// it sees committed but not queued before it reads them from the outbox.
const memHandoffGrace = 20 * time.Millisecond

// awaitHandoff waits up to memHandoffGrace for a commit to be handed over
// and reports whether the queue now continues at memFrom.
func (p *Publisher) awaitHandoff(ctx context.Context) bool {
	t := time.NewTimer(memHandoffGrace)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return false
		case <-p.wake:
		}
		if p.memContinues(p.memFrom) {
			return true
		}
	}
}

// memContinues reports whether memTake(seq) would take rows: the first
// queued commit not entirely below seq starts exactly at seq.
func (p *Publisher) memContinues(seq int64) bool {
	q := &p.mem
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropBelow(seq)
	return len(q.batches) > 0 && q.batches[0].FirstSeq == seq
}

// dropBelow forgets the queued commits entirely below seq: they are
// published. q.mu must be held.
func (q *memQueue) dropBelow(seq int64) {
	for len(q.batches) > 0 && q.batches[0].LastSeq < seq {
		q.rows -= len(q.batches[0].Inserted)
		q.batches = q.batches[1:]
	}
}

// memReset empties the queue and leaves overflow, before the publisher
// reads the outbox up to a horizon: every commit after the horizon is then
// queued.
func (p *Publisher) memReset(active bool) {
	q := &p.mem
	q.mu.Lock()
	q.overflow, q.batches, q.rows, q.active = false, nil, 0, active
	q.mu.Unlock()
}

// memTake takes whole queued commits that continue exactly at from, up to
// about BatchSize rows. ok is false when the queue cannot continue from
// there (a gap: a commit it never saw, or an overflow). next is the seq
// after the last row taken.
func (p *Publisher) memTake(from int64) (rows []outbox.Row, next int64, ok bool) {
	q := &p.mem
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropBelow(from)
	next = from
	for len(q.batches) > 0 && q.batches[0].FirstSeq == next {
		b := q.batches[0]
		if len(rows) > 0 && len(rows)+len(b.Inserted) > p.cfg.BatchSize {
			break
		}
		rows = append(rows, b.Inserted...)
		next = b.LastSeq + 1
		q.rows -= len(b.Inserted)
		q.batches = q.batches[1:]
	}
	if len(rows) == 0 && (len(q.batches) > 0 || q.overflow) {
		// The next commit in the queue is not the next seq, or the queue
		// ran out after it overflowed.
		return nil, 0, false
	}
	return rows, next, true
}

// Notify wakes the publisher after an outbox commit. It never blocks.
func (p *Publisher) Notify() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Close closes the producer's connections.
func (p *Publisher) Close() error {
	if p.ptransport != nil {
		p.ptransport.CloseIdleConnections()
	}
	p.client.Transport.(*kafka.Transport).CloseIdleConnections()
	return nil
}

// resetProducer replaces the producer with a fresh one on a new transport
// fenced by h. After a write of unknown outcome the old connections cannot
// be trusted; after a leader moved, the new transport's first metadata names
// the new leader (kafka-go's cached metadata would keep sending to the old
// one until it expires); and a new lease term must not reuse connections
// fenced by the last.
func (p *Publisher) resetProducer(h *lease.Held) {
	if p.ptransport != nil {
		p.ptransport.CloseIdleConnections()
	}
	p.ptransport = p.conn.Transport(5*time.Second, func(c net.Conn) net.Conn {
		return &fencedConn{Conn: c, held: h, sent: p.m.bytesSent}
	})
	p.producer = p.newProducer(p.ptransport)
}

// Run relays the outbox to Kafka while h is held. It first reads back what
// Kafka already holds, then publishes rows in outbox order. It returns nil
// when ctx ends, or after publishing everything committed once stop is
// closed; and an error wrapping lease.ErrFenced when it can no longer prove
// it holds the lease. Other failures are retried with backoff forever: a
// failure of one partition (its broker gone, a write of unknown outcome)
// holds up only that partition.
func (p *Publisher) Run(ctx context.Context, h *lease.Held, stop <-chan struct{}) error {
	if p.partitions == 0 {
		return errors.New("publisher: Run before Prepare succeeded")
	}
	maintCtx, stopMaint := context.WithCancel(ctx)
	maintDone := make(chan struct{})
	go func() {
		defer close(maintDone)
		p.maintain(maintCtx)
	}()
	defer func() {
		stopMaint()
		<-maintDone
	}()

	bo := p.cfg.Backoff.New()
	p.resetProducer(h)
	// A new lease term trusts nothing from the last one: read back every
	// partition's tail and read the outbox before taking rows from memory
	// again.
	p.wm = nil
	p.parts = make([]partState, p.partitions)
	for i := range p.parts {
		p.parts[i] = partState{readBack: true, backoff: p.cfg.Backoff.New()}
	}
	p.memFrom = 0
	p.memReset(true)
	// Out of its term, this process queues nothing (see memQueue.active).
	defer p.memReset(false)
	var (
		unsaved  = map[int]int64{}
		draining bool
	)
	for {
		if ctx.Err() != nil {
			return p.stopped()
		}
		select {
		case <-stop:
			draining, stop = true, nil
		default:
		}
		err := p.step(ctx, h, unsaved)
		var perr *partitionsError
		switch {
		case err == nil:
			bo.Reset()
		case errors.Is(err, errIdle):
			if draining && !p.waiting() {
				return nil
			}
			p.idle(ctx, stop)
		case ctx.Err() != nil:
			return p.stopped()
		case errors.Is(err, lease.ErrFenced):
			return err
		case errors.As(err, &perr):
			// The partitions at fault wait out their own backoff; the
			// others carry on at once. Access failures were logged once
			// by noteAccess.
			if !perr.access {
				p.log.Warn("publishing to some partitions failed; the others carry on", zap.Error(err))
			}
		default:
			wait := bo.Next()
			p.log.Warn("publish failed; retrying", zap.Error(err), zap.Duration("backoff", wait))
			retry.Sleep(ctx, wait)
		}
	}
}

// stopped is Run's result when ctx ended: a write whose outcome is still
// unknown must be let settle before a successor reads back, so the lease is
// left to expire rather than released.
func (p *Publisher) stopped() error {
	now := p.cfg.Now()
	for _, st := range p.parts {
		if st.readBack && st.settleAt.After(now) {
			return fmt.Errorf("stopped with a Kafka write of unknown outcome: %w", lease.ErrLetExpire)
		}
	}
	return nil
}

// waiting reports whether a partition is held back (waiting to be read
// back or to be retried), so that rows may be pending though none could be
// taken now.
func (p *Publisher) waiting() bool {
	for _, st := range p.parts {
		if st.readBack || !st.retryAt.IsZero() {
			return true
		}
	}
	return false
}

// partitionsError is the failure of some partitions in one step; each
// waits until its retryAt, the others go on.
type partitionsError struct {
	err error
	// access is true when every failure is an access failure (logged by
	// noteAccess).
	access bool
}

func (e *partitionsError) Error() string { return e.err.Error() }
func (e *partitionsError) Unwrap() error { return e.err }

// failed records the failure of partition part and returns its error,
// translated when it is an access failure of op.
func (p *Publisher) failed(part int, op string, err error, now time.Time) error {
	err = p.conn.Translate(err, op, p.cfg.Topic)
	p.noteAccess(err)
	st := &p.parts[part]
	st.retryAt = now.Add(st.backoff.Next())
	if st.readBack && st.settleAt.After(st.retryAt) {
		st.retryAt = st.settleAt
	}
	return fmt.Errorf("partition %d: %w", part, err)
}

var errIdle = errors.New("outbox empty")

// step publishes one batch of pending rows of the partitions that may be
// written now.
func (p *Publisher) step(ctx context.Context, h *lease.Held, unsaved map[int]int64) error {
	if err := p.readBack(ctx, h.Lease); err != nil {
		return err
	}
	// Acknowledged rows whose watermark did not reach PostgreSQL yet are
	// recorded before anything else: they must never be sent twice.
	if len(unsaved) > 0 {
		if err := p.store.MarkPublished(ctx, h.Lease, unsaved); err != nil {
			return err
		}
		clear(unsaved)
	}
	marks, all := p.writable(p.cfg.Now())
	if marks == nil {
		return errIdle
	}
	if !all {
		// The memory queue continues from a seq for every partition at
		// once; while one is held back, read the outbox.
		p.memFrom = 0
	}
	rows, memNext, horizon, err := p.next(ctx, marks, all)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return errIdle
	}
	// Kafka cannot check our epoch, so write only while the lease is
	// certainly ours: a paused instance that wakes up past its lease must
	// not produce after its successor's read-back.
	if !h.Valid() {
		return fmt.Errorf("lease %s epoch %d may have expired: %w", h.Lease.Name, h.Lease.Epoch, lease.ErrFenced)
	}
	p.cfg.Failpoints.Hit(failpoint.BeforeWrite)
	acked, werr := p.write(ctx, h, rows)
	for part, seq := range acked {
		p.wm[part] = max(p.wm[part], seq)
		unsaved[part] = seq
		p.parts[part].backoff.Reset()
	}
	switch {
	case werr != nil:
		p.memFrom = 0
	case memNext > 0:
		p.memFrom = memNext
	case horizon > 0:
		p.memFrom = horizon + 1
	}
	if len(acked) > 0 {
		p.cfg.Failpoints.Hit(failpoint.AfterAck)
		if err := p.store.MarkPublished(ctx, h.Lease, unsaved); err != nil {
			return err
		}
		clear(unsaved)
		p.m.lastPublished.Set(float64(p.cfg.Now().Unix()))
	}
	if werr == nil {
		p.noteSuccess("WRITE")
	}
	return werr
}

// writable returns the watermarks to read pending rows with: a partition
// held back (to be read back, or waiting to retry) gets MaxInt64 so that
// none of its rows is taken. It returns nil when no partition may be
// written now, and all=true when every partition may.
func (p *Publisher) writable(now time.Time) (marks []int64, all bool) {
	if p.wm == nil {
		return nil, false
	}
	marks = slices.Clone(p.wm)
	all = true
	some := false
	for part := range p.parts {
		st := &p.parts[part]
		if !st.retryAt.IsZero() && !now.Before(st.retryAt) && !st.readBack {
			st.retryAt = time.Time{}
		}
		if st.readBack || !st.retryAt.IsZero() {
			marks[part] = math.MaxInt64
			all = false
			continue
		}
		some = true
	}
	if !some {
		return nil, false
	}
	return marks, all
}

// nextDue returns when the earliest held-back partition may be tried
// again, or the zero time when none is held back.
func (p *Publisher) nextDue() time.Time {
	var due time.Time
	for _, st := range p.parts {
		t := st.retryAt
		if st.readBack && st.settleAt.After(t) {
			t = st.settleAt
		}
		if (st.readBack || !st.retryAt.IsZero()) && (due.IsZero() || t.Before(due)) {
			due = t
		}
	}
	return due
}

// next returns the rows to publish now. From memory when the queue
// continues exactly where publishing stands (memNext is then the seq after
// them); otherwise from the outbox, and when that read reaches the end of
// the outbox, horizon is the last seq that was committed before it, so that
// once these rows are written everything up to horizon is published and
// memory can take over from horizon+1. Rows at or below their partition's
// watermark are never returned.
//
// all is false while some partition is held back (its wm is MaxInt64): the
// memory queue is then not used, and no horizon is returned.
func (p *Publisher) next(ctx context.Context, wm []int64, all bool) (rows []outbox.Row, memNext, horizon int64, err error) {
	if p.memFrom > 0 {
		taken, next, ok := p.memTake(p.memFrom)
		switch {
		case ok && len(taken) > 0:
			// taken is memTake's own copy, so it is filtered in place.
			rows = taken[:0]
			for _, r := range taken {
				if r.Seq > wm[r.Partition] {
					rows = append(rows, r)
				}
			}
			if len(rows) == 0 {
				p.memFrom = next
				return p.next(ctx, wm, all)
			}
			return rows, next, 0, nil
		case ok:
			// Nothing queued: make sure no other instance committed rows
			// this process was not told about.
			last, err := p.store.LastSeq(ctx)
			if err != nil {
				return nil, 0, 0, err
			}
			if last < p.memFrom {
				return nil, 0, 0, nil
			}
			// Usually they are this process's own: a poller hands its
			// commit over a moment after COMMIT returns. Waiting that
			// moment out spares reading a page back from PostgreSQL (a
			// tenth of a catch-up's rows were); rows committed by another
			// instance wait memHandoffGrace longer.
			if p.awaitHandoff(ctx) {
				return p.next(ctx, wm, all)
			}
		}
		p.memFrom = 0
	}
	p.memReset(true)
	last, err := p.store.LastSeq(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	rows, err = p.store.Pending(ctx, wm, p.cfg.BatchSize)
	if err != nil {
		return nil, 0, 0, err
	}
	p.m.outboxReads.Add(float64(len(rows)))
	if all && len(rows) < p.cfg.BatchSize {
		horizon = max(last, 1)
		if len(rows) == 0 {
			p.memFrom = last + 1
		}
	}
	return rows, 0, horizon, nil
}

// Upper bounds of a v2 record batch's encoding beyond its records' keys,
// values and header strings: the batch header, and per record and header
// the varint lengths, attributes and deltas.
const (
	batchOverhead  = 61
	recordOverhead = 32
	headerOverhead = 10
)

// chunkLen returns how many of the records whose estimated sizes are sizes
// fit in one record batch of at most maxBytes; at least one, so that a
// record larger than maxBytes still goes (alone) and the broker decides.
func chunkLen(sizes []int, maxBytes int) int {
	total := batchOverhead
	n := 0
	for n < len(sizes) && (n == 0 || total+sizes[n] <= maxBytes) {
		total += sizes[n]
		n++
	}
	return n
}

// perMsg is the number of headers of a record: seven CloudEvents headers,
// seq and epoch.
const perMsg = 9

// writeBufs are the buffers a write's records are built in, reused from one
// write to the next so that publishing allocates per batch rather than per
// record, and, once they have grown to a batch, not at all.
type writeBufs struct {
	kh   []kafka.Header
	seqs []byte
	recs []kafka.Record
	// sizes[k] is the estimated encoded size of recs[k].
	sizes   []int
	readers []recordBytes
	hvals   []byte
	keys    []byte
}

// reset returns the buffers emptied and with room for n records whose keys
// take keyBytes; recs and sizes have length n, readers 2n.
func (b *writeBufs) reset(n, keyBytes int) (kh []kafka.Header, seqs []byte, recs []kafka.Record, sizes []int, readers []recordBytes, hvals, keys []byte) {
	if cap(b.recs) < n {
		b.recs = make([]kafka.Record, n)
		b.sizes = make([]int, n)
		b.readers = make([]recordBytes, 2*n)
	}
	return slices.Grow(b.kh[:0], perMsg*n), slices.Grow(b.seqs[:0], 20*n), b.recs[:n], b.sizes[:n], b.readers[:2*n],
		slices.Grow(b.hvals[:0], headerBytesPerMsg*n), slices.Grow(b.keys[:0], keyBytes)
}

// keep stores the buffers as grown by a write. The records and readers are
// cleared, so that the batch's payloads are not kept alive by them.
func (b *writeBufs) keep(kh []kafka.Header, seqs []byte, recs []kafka.Record, sizes []int, readers []recordBytes, hvals, keys []byte) {
	clear(recs)
	clear(readers)
	b.kh, b.seqs, b.recs, b.sizes, b.readers, b.hvals, b.keys = kh, seqs, recs, sizes, readers, hvals, keys
}

// headerBytesPerMsg is a first guess at a message's header values (ids,
// source, type, time, subject); the buffer grows if it is short.
const headerBytesPerMsg = 192

// Retries of a partition whose leader moved, within one write: the first
// at once on fresh metadata, then after movedPause, doubling, so that an
// election in progress (LEADER_NOT_AVAILABLE) has time to finish. After
// them, the partition waits out its backoff and the others carry on.
const (
	movedRetries = 3
	movedPause   = 50 * time.Millisecond
)

// write sends rows to Kafka and returns, per partition, the highest seq
// acknowledged. Each partition's rows go in requests of at most BatchBytes,
// one after another, and every partition's at once: at most one request per
// partition is ever in flight, so partition order is outbox order, and what
// Kafka acknowledged of a partition is always a prefix of its rows.
//
// A request answered with an error that proves it was not written (its
// leader moved, its broker is gone) is sent again on fresh metadata, up to
// movedRetries times, with no read-back. A partition whose request may have
// been written (a timeout, a dropped connection) is marked for read-back
// once the request can no longer land; one refused outright waits out its
// backoff. The error is a *partitionsError naming each partition at fault.
func (p *Publisher) write(ctx context.Context, h *lease.Held, rows []outbox.Row) (map[int]int64, error) {
	// The batch's records, their key and value readers, headers, header
	// values, keys and seq values share a few allocations instead of taking
	// several per message; each record gets capped windows of them. Records are grouped by partition, each partition's a
	// contiguous window of recs in outbox order: first[part] is where it
	// starts, next[part] where its next record goes.
	b := p.bufs
	p.bufs = nil
	if b == nil {
		b = new(writeBufs)
	}
	var (
		now        = p.cfg.Now()
		epochValue = strconv.AppendInt(nil, h.Lease.Epoch, 10)
		hdrs       = make([]event.Header, 0, perMsg)
		first      = make([]int, p.partitions+1)
		next       = make([]int, p.partitions)
		// recSeq[k] is the seq of recs[k], and recRow[k] its row.
		recSeq = make([]int64, len(rows))
	)
	keyBytes := 0
	for i := range rows {
		if part := rows[i].Partition; part < 0 || part >= p.partitions {
			return nil, fmt.Errorf("outbox row %d has partition %d, outside the %d the outbox is written for", rows[i].Seq, part, p.partitions)
		}
		first[rows[i].Partition+1]++
		keyBytes += len(rows[i].Msg.Key)
	}
	kh, seqs, recs, sizes, readers, hvals, keys := b.reset(len(rows), keyBytes)
	for part := range p.partitions {
		first[part+1] += first[part]
		next[part] = first[part]
	}
	for i := range rows {
		r := &rows[i]
		hdrs, hvals = r.Msg.AppendHeadersBuf(hdrs[:0], hvals)
		seqStart := len(seqs)
		seqs = strconv.AppendInt(seqs, r.Seq, 10)
		hdrs = append(hdrs,
			event.Header{Key: HeaderSeq, Value: seqs[seqStart:len(seqs):len(seqs)]},
			event.Header{Key: HeaderEpoch, Value: epochValue})
		start := len(kh)
		size := recordOverhead + len(r.Msg.Key) + len(r.Msg.Payload)
		for _, h := range hdrs {
			kh = append(kh, kafka.Header(h))
			size += headerOverhead + len(h.Key) + len(h.Value)
		}
		keyStart := len(keys)
		keys = append(keys, r.Msg.Key...)
		key, value := &readers[2*i], &readers[2*i+1]
		key.b, value.b = keys[keyStart:len(keys):len(keys)], r.Msg.Payload
		k := next[r.Partition]
		next[r.Partition]++
		// The record time is the time of the write: Kafka's time-based
		// retention and consumers' seeks by time go by it.
		recs[k] = kafka.Record{Time: now, Key: key, Value: value, Headers: kh[start:len(kh):len(kh)]}
		sizes[k] = size
		recSeq[k] = r.Seq
	}

	wctx, cancel := context.WithTimeout(ctx, p.cfg.WriteTimeout)
	defer cancel()
	started := p.cfg.Now()
	// pos[part] is where the partition's first record not yet acknowledged
	// is in recs.
	pos := slices.Clone(first[:p.partitions])
	errs := make([]error, p.partitions)
	send := func(part int) {
		for end := first[part+1]; pos[part] < end; {
			n := chunkLen(sizes[pos[part]:end], p.cfg.BatchBytes)
			res, err := p.producer.Produce(wctx, &kafka.ProduceRequest{
				Topic: p.cfg.Topic, Partition: part, RequiredAcks: kafka.RequireAll, Compression: p.codec,
				Records: kafka.NewRecordReader(recs[pos[part] : pos[part]+n]...),
			})
			if err == nil {
				err = res.Error
			}
			if err != nil {
				// The later chunks are not sent, so what landed is a
				// prefix of the partition's rows.
				errs[part] = err
				return
			}
			pos[part] += n
		}
	}
	active := make([]int, 0, p.partitions)
	for part := range p.partitions {
		if first[part] < first[part+1] {
			active = append(active, part)
		}
	}
	for round := 0; ; round++ {
		var wg sync.WaitGroup
		for _, part := range active {
			errs[part] = nil
			wg.Go(func() { send(part) })
		}
		wg.Wait()
		moved := active[:0]
		for _, part := range active {
			if errs[part] != nil && kafkaconn.ProduceOutcome(errs[part]) == kafkaconn.Moved {
				moved = append(moved, part)
			}
		}
		if len(moved) == 0 || round == movedRetries || wctx.Err() != nil {
			break
		}
		// Every request was answered (or never sent), so kafka-go is done
		// with the records' readers: rewind the unsent ones and send them
		// again, to the leader that fresh metadata names.
		p.m.retriedWrites.Add(float64(len(moved)))
		for _, part := range moved {
			for k := pos[part]; k < first[part+1]; k++ {
				recs[k].Key.(*recordBytes).off = 0
				recs[k].Value.(*recordBytes).off = 0
			}
		}
		p.resetProducer(h)
		if round > 0 && !retry.Sleep(wctx, movedPause<<(round-1)) {
			break
		}
		active = moved
	}
	p.m.writeSeconds.Observe(p.cfg.Now().Sub(started).Seconds())

	acked := make(map[int]int64, p.partitions)
	var (
		failures []error
		unknown  bool
		access   = true
	)
	now = p.cfg.Now()
	for part := range p.partitions {
		if pos[part] > first[part] {
			acked[part] = recSeq[pos[part]-1]
		}
		err := errs[part]
		if err == nil {
			continue
		}
		outcome := kafkaconn.ProduceOutcome(err)
		if outcome == kafkaconn.Unknown {
			// Kafka may still append the request until it times out on
			// the broker: read the partition back only after that.
			unknown = true
			st := &p.parts[part]
			st.readBack = true
			st.settleAt = now.Add(p.cfg.WriteTimeout)
			p.m.unknownWrites.Inc()
		}
		err = p.failed(part, "WRITE", fmt.Errorf("%s: %w", outcome, err), now)
		var ae *kafkaconn.AccessError
		access = access && errors.As(err, &ae)
		failures = append(failures, err)
	}
	p.countPublished(rows, acked, now)
	if len(failures) == 0 {
		b.keep(kh, seqs, recs, sizes, readers, hvals, keys)
		p.bufs = b
		return acked, nil
	}
	p.m.writeErrors.Inc()
	if unknown {
		// The connections of a write of unknown outcome cannot be trusted,
		// and kafka-go may still be encoding from the batch's buffers, so
		// they are not reused either.
		p.resetProducer(h)
	} else {
		b.keep(kh, seqs, recs, sizes, readers, hvals, keys)
		p.bufs = b
	}
	return acked, &partitionsError{err: fmt.Errorf("write %d events to kafka: %w", len(rows), errors.Join(failures...)), access: access}
}

// countPublished updates the metrics of the rows Kafka acknowledged: those
// of each partition up to acked[partition].
func (p *Publisher) countPublished(rows []outbox.Row, acked map[int]int64, now time.Time) {
	// The per-source counter is added to once per run of rows of one
	// source, not looked up by label for every row.
	run, runSource := 0, ""
	for i := range rows {
		r := &rows[i]
		if a, ok := acked[r.Partition]; !ok || r.Seq > a {
			continue
		}
		p.m.lag.Observe(now.Sub(r.Msg.Time).Seconds())
		if r.SourceID != runSource {
			if run > 0 {
				p.m.published.WithLabelValues(runSource).Add(float64(run))
			}
			run, runSource = 0, r.SourceID
		}
		run++
	}
	if run > 0 {
		p.m.published.WithLabelValues(runSource).Add(float64(run))
	}
}

// idle waits for a commit's wake-up, a stop, IdlePoll, or the moment a
// held-back partition may be tried again, whichever comes first.
func (p *Publisher) idle(ctx context.Context, stop <-chan struct{}) {
	wait := p.cfg.IdlePoll
	if due := p.nextDue(); !due.IsZero() {
		wait = min(wait, max(due.Sub(p.cfg.Now()), time.Millisecond))
	}
	retry.Sleep(ctx, wait, p.wake, stop)
}

// maintain prunes the outbox and refreshes the backlog gauges.
func (p *Publisher) maintain(ctx context.Context) {
	prune := time.NewTicker(p.cfg.PruneInterval)
	defer prune.Stop()
	gauge := time.NewTicker(5 * time.Second)
	defer gauge.Stop()
	p.refreshBacklog(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-gauge.C:
			p.refreshBacklog(ctx)
		case <-prune.C:
			for {
				n, err := p.store.Prune(ctx, p.cfg.Retention, pruneBatch)
				if err != nil {
					if ctx.Err() == nil {
						p.log.Warn("prune outbox", zap.Error(err))
					}
					break
				}
				p.m.pruned.Add(float64(n))
				if n < pruneBatch {
					break
				}
			}
		}
	}
}

func (p *Publisher) refreshBacklog(ctx context.Context) {
	b, err := p.store.Backlog(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("count outbox backlog", zap.Error(err))
		}
		return
	}
	p.m.backlog.Set(float64(b.Rows))
	if b.Oldest.IsZero() {
		p.m.oldestAge.Set(0)
	} else {
		p.m.oldestAge.Set(p.cfg.Now().Sub(b.Oldest).Seconds())
	}
}
