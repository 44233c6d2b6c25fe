package publish

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ingestd/ingestd/internal/event"
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

// readTails reads the last record of every partition directly from its
// leader. This is the check Kafka's own producer documentation recommends
// after an ambiguous send: what the broker holds is the truth.
func (p *Publisher) readTails(ctx context.Context) ([]tail, error) {
	d := &kafka.Dialer{ClientID: "ingestd", Timeout: 10 * time.Second}
	tails := make([]tail, p.partitions)
	for part := range p.partitions {
		var (
			t   tail
			err error
		)
		for _, broker := range p.cfg.Brokers {
			t, err = readTail(ctx, d, broker, p.cfg.Topic, part)
			if err == nil {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("read back partition %d of %s: %w", part, p.cfg.Topic, err)
		}
		tails[part] = t
	}
	return tails, nil
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

// reconcile raises the stored watermarks to what Kafka already holds, so
// that rows acknowledged by Kafka but not yet recorded (a crash between the
// two, an ambiguous write that did land) are never sent again. It returns
// the watermarks to publish from.
func (p *Publisher) reconcile(ctx context.Context, l lease.Lease) ([]int64, error) {
	tails, err := p.readTails(ctx)
	if err != nil {
		return nil, err
	}
	wm, err := p.store.Watermarks(ctx)
	if err != nil {
		return nil, err
	}
	if len(wm) != p.partitions {
		return nil, fmt.Errorf("publish progress has %d partitions, the outbox target %d", len(wm), p.partitions)
	}
	marks := map[int]int64{}
	for part, t := range tails {
		if t.seq <= wm[part] {
			continue
		}
		row, err := p.store.Row(ctx, t.seq)
		if err != nil {
			return nil, err
		}
		if row == nil || row.Partition != part || row.Msg.ID != t.eventID {
			return nil, fmt.Errorf("%w: partition %d ends with seq %d (ce_id %s), which this outbox does not hold there; is another ingestd database publishing to %q?",
				ErrForeignRecord, part, t.seq, t.eventID, p.cfg.Topic)
		}
		marks[part] = t.seq
		wm[part] = t.seq
	}
	if len(marks) > 0 {
		if err := p.store.MarkPublished(ctx, l, marks); err != nil {
			return nil, err
		}
		p.m.reconciled.Add(float64(len(marks)))
	}
	return wm, nil
}
