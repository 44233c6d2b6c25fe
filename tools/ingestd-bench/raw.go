package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// rawBatch is the number of messages per kafka-go write in the raw produce
// run, which is also the size of the sample of real messages and rows the
// raw runs cycle through.
const rawBatch = 1000

// kafkaCodecs maps the codec names of INGESTD_KAFKA_COMPRESSION (and of
// codecName) to kafka-go's, for the raw produce run.
var kafkaCodecs = map[string]kafka.Compression{
	"none":   0,
	"gzip":   kafka.Gzip,
	"snappy": kafka.Snappy,
	"lz4":    kafka.Lz4,
	"zstd":   kafka.Zstd,
}

// codecName names the compression type of a record batch's attributes, as
// INGESTD_KAFKA_COMPRESSION does.
func codecName(t uint8) string {
	switch t {
	case 0:
		return "none"
	case 1:
		return "gzip"
	case 2:
		return "snappy"
	case 3:
		return "lz4"
	case 4:
		return "zstd"
	}
	return "codec " + strconv.Itoa(int(t))
}

// batchCodecs records the codecs of the record batches a client fetches.
type batchCodecs struct {
	mu   sync.Mutex
	seen map[uint8]bool
}

func (h *batchCodecs) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen == nil {
		h.seen = map[uint8]bool{}
	}
	h.seen[m.CompressionType] = true
}

// name is the one codec seen, or all of them joined by "+" ("" if none).
func (h *batchCodecs) name() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var names []string
	for t := range h.seen {
		names = append(names, codecName(t))
	}
	slices.Sort(names)
	return strings.Join(names, "+")
}

// sampleRecords reads the first want records of topic, keys, values and
// headers exactly as ingestd produced them, with their partitions, and
// names the codec of the record batches they came in.
func sampleRecords(ctx context.Context, broker, topic string, want int) ([]kafka.Message, string, error) {
	var seen batchCodecs
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond), kgo.WithHooks(&seen))
	if err != nil {
		return nil, "", fmt.Errorf("create a consumer of %s: %w", topic, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out := make([]kafka.Message, 0, want)
	for len(out) < want {
		f := cl.PollRecords(ctx, want-len(out))
		if err := ctx.Err(); err != nil {
			return nil, "", fmt.Errorf("read %d sample records of %s (got %d): %w", want, topic, len(out), err)
		}
		var ferr error
		f.EachError(func(t string, p int32, err error) {
			ferr = errors.Join(ferr, fmt.Errorf("fetch %s/%d: %w", t, p, err))
		})
		if ferr != nil {
			return nil, "", ferr
		}
		f.EachRecord(func(r *kgo.Record) {
			hs := make([]kafka.Header, len(r.Headers))
			for i, h := range r.Headers {
				hs[i] = kafka.Header{Key: h.Key, Value: h.Value}
			}
			out = append(out, kafka.Message{Partition: int(r.Partition), Key: r.Key, Value: r.Value, Headers: hs})
		})
	}
	return out, seen.name(), nil
}

// avgMessageBytes is the average size of key, value and headers.
func avgMessageBytes(msgs []kafka.Message) float64 {
	var sum int
	for _, m := range msgs {
		sum += len(m.Key) + len(m.Value)
		for _, h := range m.Headers {
			sum += len(h.Key) + len(h.Value)
		}
	}
	return float64(sum) / float64(len(msgs))
}

// deleteTopic deletes topic and its records from the broker.
func deleteTopic(ctx context.Context, broker, topic string) error {
	cl := &kafka.Client{Addr: kafka.TCP(broker), Timeout: 10 * time.Second}
	resp, err := cl.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err != nil {
		return fmt.Errorf("delete topic %s: %w", topic, err)
	}
	if err := resp.Errors[topic]; err != nil {
		return fmt.Errorf("delete topic %s: %w", topic, err)
	}
	return nil
}

// topicRecords counts the records of topic from the partitions' high
// watermarks (nothing is ever deleted from the in-process broker).
func topicRecords(ctx context.Context, broker, topic string, partitions int) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		return 0, fmt.Errorf("create a Kafka client: %w", err)
	}
	defer cl.Close()
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for p := range partitions {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = int32(p)
		rp.Timestamp = -1 // the high watermark
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	var sum int64
	seen := 0
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return 0, fmt.Errorf("list offsets of %s/%d: %w", topic, p.Partition, err)
			}
			sum += p.Offset
			seen++
		}
	}
	if seen != partitions {
		return 0, fmt.Errorf("list offsets of %s: %d partitions answered, want %d", topic, seen, partitions)
	}
	return sum, nil
}

// topicBytes is the size of topic's partitions as the broker reports it
// (DescribeLogDirs): for kfake, the record batches' bytes as produced.
func topicBytes(ctx context.Context, broker, topic string, partitions int) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		return 0, fmt.Errorf("create a Kafka client: %w", err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDescribeLogDirsRequest()
	rt := kmsg.NewDescribeLogDirsRequestTopic()
	rt.Topic = topic
	for p := range partitions {
		rt.Partitions = append(rt.Partitions, int32(p))
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("describe the log dirs of %s: %w", topic, err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return 0, fmt.Errorf("describe the log dirs of %s: %w", topic, err)
	}
	var sum int64
	seen := 0
	for _, d := range resp.Dirs {
		if err := kerr.ErrorForCode(d.ErrorCode); err != nil {
			return 0, fmt.Errorf("describe the log dir %s: %w", d.Dir, err)
		}
		for _, t := range d.Topics {
			if t.Topic != topic {
				continue
			}
			for _, p := range t.Partitions {
				sum += p.Size
				seen++
			}
		}
	}
	if seen != partitions {
		return 0, fmt.Errorf("describe the log dirs of %s: %d partitions answered, want %d", topic, seen, partitions)
	}
	return sum, nil
}

// rawKafka produces n messages, cycling through sample, to the raw topic
// with kafka-go configured like ingestd's writer (acks from all replicas,
// batches of up to 1000, 2ms batch timeout, the partition ingestd chose,
// the codec of ingestd's batches), 1000 messages per synchronous call. It
// returns the time taken and the harness's CPU meanwhile (the broker's
// work, plus kafka-go's).
func rawKafka(ctx context.Context, broker string, sample []kafka.Message, n int, codec kafka.Compression) (elapsed, cpu time.Duration, err error) {
	if len(sample) == 0 {
		return 0, 0, errors.New("raw produce: no sample messages")
	}
	w := &kafka.Writer{
		Addr:                   kafka.TCP(broker),
		Topic:                  rawTopic,
		Balancer:               kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition }),
		RequiredAcks:           kafka.RequireAll,
		BatchSize:              rawBatch,
		BatchBytes:             64 << 20,
		BatchTimeout:           2 * time.Millisecond,
		MaxAttempts:            3,
		Compression:            codec,
		AllowAutoTopicCreation: false,
	}
	defer func() {
		if cerr := w.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close the raw writer: %w", cerr))
		}
	}()
	batch := make([]kafka.Message, 0, rawBatch)
	fill := func(from, k int) []kafka.Message {
		batch = batch[:0]
		for j := range k {
			m := &sample[(from+j)%len(sample)]
			batch = append(batch, kafka.Message{Partition: m.Partition, Key: m.Key, Value: m.Value, Headers: m.Headers})
		}
		return batch
	}
	// One untimed write first: connecting and fetching metadata are start-up
	// costs, like ingestd's, which are not counted either.
	if err := w.WriteMessages(ctx, fill(0, min(rawBatch, n))...); err != nil {
		return 0, 0, fmt.Errorf("raw produce (warm-up): %w", err)
	}
	cpu0, t0 := selfCPU(), time.Now()
	for sent := 0; sent < n; {
		k := min(rawBatch, n-sent)
		if err := w.WriteMessages(ctx, fill(sent, k)...); err != nil {
			return 0, 0, fmt.Errorf("raw produce after %d messages: %w", sent, err)
		}
		sent += k
	}
	return time.Since(t0), selfCPU() - cpu0, nil
}

// outboxSample is a sample of real outbox rows, all columns as PostgreSQL
// returned them, so the raw run writes rows of the same shape and size
// whatever the outbox's columns are.
type outboxSample struct {
	cols     []string
	rows     [][]any
	seqCol   int
	idCol    int
	avgBytes float64 // pg_column_size of a whole row, on average
}

// sampleOutbox reads the first limit rows of the outbox.
func sampleOutbox(ctx context.Context, conn *pgx.Conn, limit int) (*outboxSample, error) {
	rows, err := conn.Query(ctx, `SELECT * FROM outbox ORDER BY seq LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("sample outbox rows: %w", err)
	}
	defer rows.Close()
	s := &outboxSample{seqCol: -1, idCol: -1}
	for i, fd := range rows.FieldDescriptions() {
		s.cols = append(s.cols, fd.Name)
		switch fd.Name {
		case "seq":
			s.seqCol = i
		case "event_id":
			s.idCol = i
		}
	}
	for rows.Next() {
		v, err := rows.Values()
		if err != nil {
			return nil, fmt.Errorf("sample outbox rows: %w", err)
		}
		s.rows = append(s.rows, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sample outbox rows: %w", err)
	}
	if s.seqCol < 0 || s.idCol < 0 {
		return nil, fmt.Errorf("sample outbox rows: the outbox has no seq or event_id column (columns %v); update the raw PostgreSQL run", s.cols)
	}
	if len(s.rows) == 0 {
		return nil, errors.New("sample outbox rows: the outbox is empty")
	}
	err = conn.QueryRow(ctx, `SELECT avg(pg_column_size(o.*))::float8 FROM (SELECT * FROM outbox ORDER BY seq LIMIT $1) AS o`, limit).Scan(&s.avgBytes)
	if err != nil {
		return nil, fmt.Errorf("measure outbox row size: %w", err)
	}
	return s, nil
}

// rawPostgres writes n rows shaped like the sample into the scratch schema's
// outbox, one transaction per page of pageLimit rows: a COPY of the page
// plus a one-row cursor update, the least any design committing pages
// durably must do. It returns the time taken and, when the server is local,
// the CPU its backend used.
func rawPostgres(ctx context.Context, dsn string, s *outboxSample, n, pageLimit int, cursorAfter func(int) string, local bool) (elapsed, cpu time.Duration, cpuOK bool, err error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, 0, false, fmt.Errorf("raw PostgreSQL run: connect: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, `INSERT INTO source_cursors (source_id, cursor) VALUES ($1, $2)`, sourceID, cursorAfter(0)); err != nil {
		return 0, 0, false, fmt.Errorf("raw PostgreSQL run: create the cursor row: %w", err)
	}
	var pid int32
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		return 0, 0, false, fmt.Errorf("raw PostgreSQL run: backend pid: %w", err)
	}
	// Cursors are computed up front so the timed loop holds only the
	// database work.
	cursors := make([]string, 0, n/pageLimit+1)
	for done := 0; done < n; done += pageLimit {
		cursors = append(cursors, cursorAfter(min(done+pageLimit, n)))
	}
	src := &pageRows{s: s, vals: make([]any, len(s.cols)), rng: rand.NewChaCha8([32]byte{1})}
	cpu0, cpuErr := procCPU(int(pid))
	t0 := time.Now()
	for page, done := 0, 0; done < n; page++ {
		k := min(pageLimit, n-done)
		src.reset(done, k)
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"outbox"}, s.cols, src); err != nil {
				return fmt.Errorf("copy: %w", err)
			}
			if _, err := tx.Exec(ctx, `UPDATE source_cursors SET cursor = $2, events_total = events_total + $3, updated_at = now() WHERE source_id = $1`,
				sourceID, cursors[page], k); err != nil {
				return fmt.Errorf("update the cursor: %w", err)
			}
			return nil
		})
		if err != nil {
			return 0, 0, false, fmt.Errorf("raw PostgreSQL run, page at row %d: %w", done, err)
		}
		done += k
	}
	elapsed = time.Since(t0)
	if local && cpuErr == nil {
		if cpu1, err := procCPU(int(pid)); err == nil {
			return elapsed, cpu1 - cpu0, true, nil
		}
	}
	return elapsed, 0, false, nil
}

// pageRows feeds one page to CopyFrom: sample rows in turn, each with a
// fresh seq and a fresh random event_id (the table's unique keys). pgx
// encodes each row before asking for the next, so one values slice is
// reused.
type pageRows struct {
	s     *outboxSample
	vals  []any
	rng   *rand.ChaCha8
	first int
	n     int
	i     int
}

func (p *pageRows) reset(first, n int) { p.first, p.n, p.i = first, n, 0 }

func (p *pageRows) Next() bool {
	if p.i >= p.n {
		return false
	}
	idx := p.first + p.i
	copy(p.vals, p.s.rows[idx%len(p.s.rows)])
	p.vals[p.s.seqCol] = int64(idx + 1)
	var id [16]byte
	_, _ = p.rng.Read(id[:])
	id[6] = id[6]&0x0f | 0x40 // version 4
	id[8] = id[8]&0x3f | 0x80 // RFC 4122 variant
	p.vals[p.s.idCol] = id
	p.i++
	return true
}

func (p *pageRows) Values() ([]any, error) { return p.vals, nil }

func (p *pageRows) Err() error { return nil }
