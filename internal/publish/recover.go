package publish

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/kafkaconn"
	"github.com/ingestd/ingestd/internal/lease"
)

// ErrForeignRecord means a partition's last record does not match the
// outbox: the topic is being written by something else (another ingestd
// database, another producer). Publishing stops rather than guess.
var ErrForeignRecord = errors.New("the topic's last record does not match this outbox")

// tail is what Kafka holds at the end of one partition.
type tail struct {
	seq     int64 // ingestd_seq of the last record; 0 when the partition is empty
	eventID string
}

// readTail reads the last record of partition part directly from its
// leader, asking each bootstrap broker in turn where the leader is. This is
// the check Kafka's own producer documentation recommends after an
// ambiguous send: what the broker holds is the truth.
func (p *Publisher) readTail(ctx context.Context, part int) (tail, error) {
	d := p.conn.Dialer(10 * time.Second)
	var err error
	for _, broker := range p.cfg.Brokers {
		var t tail
		if t, err = readTail(ctx, d, broker, p.cfg.Topic, part); err == nil {
			return t, nil
		}
		var foreign bool
		if foreign = errors.Is(err, ErrForeignRecord); foreign {
			return tail{}, err
		}
	}
	return tail{}, fmt.Errorf("read back: %w", err)
}

func readTail(ctx context.Context, d *kafka.Dialer, broker, topic string, part int) (tail, error) {
	conn, err := d.DialLeader(ctx, "tcp", broker, topic, part)
	if err != nil {
		return tail{}, err
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		// A socket deadline is wall-clock time for the kernel: the real
		// clock, not the injected one.
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	first, err := conn.ReadFirstOffset()
	if err != nil {
		return tail{}, fmt.Errorf("first offset: %w", err)
	}
	last, err := conn.ReadLastOffset()
	if err != nil {
		return tail{}, fmt.Errorf("last offset: %w", err)
	}
	if last <= first {
		return tail{}, nil
	}
	if _, err := conn.Seek(last-1, kafka.SeekAbsolute); err != nil {
		return tail{}, fmt.Errorf("seek to %d: %w", last-1, err)
	}
	batch := conn.ReadBatch(1, 64<<20)
	defer func() { _ = batch.Close() }()
	// A fetch may return a whole record batch from before the offset asked
	// for; skip to the last record.
	for {
		msg, err := batch.ReadMessage()
		if err != nil {
			return tail{}, fmt.Errorf("read record %d: %w", last-1, err)
		}
		if msg.Offset < last-1 {
			continue
		}
		t := tail{}
		for _, h := range msg.Headers {
			switch h.Key {
			case HeaderSeq:
				t.seq, err = strconv.ParseInt(string(h.Value), 10, 64)
				if err != nil {
					return tail{}, fmt.Errorf("%w: record %d has %s %q", ErrForeignRecord, msg.Offset, HeaderSeq, h.Value)
				}
			case event.HeaderID:
				t.eventID = string(h.Value)
			}
		}
		if t.seq <= 0 {
			return tail{}, fmt.Errorf("%w: record %d of partition %d has no %s header", ErrForeignRecord, msg.Offset, part, HeaderSeq)
		}
		return t, nil
	}
}

// readBack reads back the tail of every partition that needs it and may
// be tried now, and raises the watermarks to what Kafka already holds, so
// that rows acknowledged by Kafka but not yet recorded (a crash between the
// two, a write of unknown outcome that did land) are never sent again. At
// the start of a term it loads the stored watermarks first. A partition
// that cannot be read back waits out its backoff; the others go on.
func (p *Publisher) readBack(ctx context.Context, l lease.Lease) error {
	now := p.cfg.Now()
	var due []int
	for part, st := range p.parts {
		if st.readBack && !now.Before(st.settleAt) && !now.Before(st.retryAt) {
			due = append(due, part)
		}
	}
	if len(due) == 0 {
		return nil
	}
	if p.wm == nil {
		wm, err := p.store.Watermarks(ctx)
		if err != nil {
			return err
		}
		if len(wm) != p.partitions {
			return fmt.Errorf("publish progress has %d partitions, the outbox target %d", len(wm), p.partitions)
		}
		p.wm = wm
	}
	var (
		marks    = map[int]int64{}
		failures []error
		access   = true
	)
	for _, part := range due {
		t, err := p.readTail(ctx, part)
		if errors.Is(err, ErrForeignRecord) {
			return err
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			err = p.failed(part, "READ", err, p.cfg.Now())
			var ae *kafkaconn.AccessError
			access = access && errors.As(err, &ae)
			failures = append(failures, err)
			continue
		}
		p.m.readbacks.Inc()
		p.noteSuccess("READ")
		if t.seq > p.wm[part] {
			row, err := p.store.Row(ctx, t.seq)
			if err != nil {
				return err
			}
			if row == nil || row.Partition != part || row.Msg.ID != t.eventID {
				return fmt.Errorf("%w: partition %d ends with seq %d (ce_id %s), which this outbox does not hold there; is another ingestd database publishing to %q?",
					ErrForeignRecord, part, t.seq, t.eventID, p.cfg.Topic)
			}
			marks[part] = t.seq
			p.wm[part] = t.seq
		}
		st := &p.parts[part]
		st.readBack, st.settleAt, st.retryAt = false, time.Time{}, time.Time{}
	}
	if len(marks) > 0 {
		if err := p.store.MarkPublished(ctx, l, marks); err != nil {
			return err
		}
		p.m.reconciled.Add(float64(len(marks)))
	}
	if len(failures) > 0 {
		return &partitionsError{err: errors.Join(failures...), access: access}
	}
	return nil
}
