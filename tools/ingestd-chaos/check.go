package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/publish"
)

// maxExamples bounds the evidence printed for each kind of problem.
const maxExamples = 10

// stableFor is how long the record count must stay unchanged, once the
// topic's end was reached, before the checker stops reading: long enough for
// a late record to show up.
const stableFor = 2 * time.Second

// record is one consumed Kafka record, decoded.
type record struct {
	partition int32
	offset    int64
	key       string
	ceID      string
	// seq and epoch are the ingestd_seq and ingestd_epoch headers; -1 when
	// missing or malformed.
	seq   int64
	epoch int64
	// source is the ce_source header, "/ingestd/yandex/<account>".
	source string
	// id, account, orderID and revision come from the payload; err is set
	// when the payload does not parse.
	id       string
	account  string
	orderID  string
	revision int64
	err      error
	// ts is the record's timestamp: the producer's clock when the write
	// was handed to the Kafka client (CreateTime), which tells when a late
	// write was actually issued.
	ts time.Time
	// arrived is when its produce batch reached the broker; zero when
	// unknown.
	arrived time.Time
}

func (r *record) String() string {
	arrived := "?"
	if !r.arrived.IsZero() {
		arrived = clock(r.arrived)
	}
	return fmt.Sprintf("p%d@%d (seq %d, epoch %d, issued %s, arrived %s)", r.partition, r.offset, r.seq, r.epoch, clock(r.ts), arrived)
}

// journal is what the topic must hold: every entry of every account's
// simulated journal once. Entries are numbered account after account, so
// that within one account (and so within one key, since claims belong to
// one account) a larger index is a later journal entry.
type journal struct {
	ids   []string       // entry index -> event id
	byID  map[string]int // event id -> entry index
	claim []string
	rev   []int64
	// acct is the entry's account, an index into accounts; base is the
	// index of each account's first entry.
	acct     []int
	accounts []string
	base     []int
}

// expectedJournal computes the event id of every entry of every account
// exactly as ingestd's Yandex normalization documents it (docs/events.md): a
// UUIDv5 of provider, account, claim, operation, change type and revision.
func expectedJournal(accounts []*simAccount) (*journal, error) {
	n := 0
	for _, a := range accounts {
		n += a.events
	}
	j := &journal{ids: make([]string, n), byID: make(map[string]int, n), claim: make([]string, n), rev: make([]int64, n), acct: make([]int, n)}
	// claimOf keeps per-key order meaningful across accounts: Yandex claim
	// ids are unique across its clients, and the Kafka key has no account.
	claimOf := map[string]int{}
	i := 0
	for ai, a := range accounts {
		j.accounts = append(j.accounts, a.name)
		j.base = append(j.base, i)
		for k := range a.events {
			e := a.y.Entry(k)
			id := event.ID(event.ProviderYandex, a.name, e.ClaimID, strconv.FormatInt(e.OperationID, 10), e.ChangeType, strconv.FormatInt(e.Revision, 10))
			if prev, dup := j.byID[id]; dup {
				return nil, fmt.Errorf("simulator entries %s and %s have the same event id %s; the checker needs unique ids", j.describeEntry(prev), j.entryName(ai, k), id)
			}
			if other, ok := claimOf[e.ClaimID]; ok && other != ai {
				return nil, fmt.Errorf("accounts %s and %s share claim %s; the checker needs claim ids unique across accounts, as Yandex's are", j.accounts[other], a.name, e.ClaimID)
			}
			claimOf[e.ClaimID] = ai
			j.ids[i], j.byID[id], j.claim[i], j.rev[i], j.acct[i] = id, i, e.ClaimID, e.Revision, ai
			i++
		}
	}
	return j, nil
}

// entryName names entry k of account ai: its journal position, prefixed by
// the account when there are several.
func (j *journal) entryName(ai, k int) string {
	if len(j.accounts) > 1 {
		return fmt.Sprintf("%s entry %d", j.accounts[ai], k)
	}
	return fmt.Sprintf("entry %d", k)
}

// describeEntry names a journal entry for evidence lines.
func (j *journal) describeEntry(i int) string {
	ai := j.acct[i]
	return fmt.Sprintf("%s (claim %s rev %d, id %s)", j.entryName(ai, i-j.base[ai]), j.claim[i], j.rev[i], j.ids[i])
}

// accountOf returns the index of the account a record claims, from its
// payload; -1 for an account the run does not have.
func (j *journal) accountOf(r *record) int {
	for i, name := range j.accounts {
		if name == r.account {
			return i
		}
	}
	return -1
}

// check consumes the whole topic and compares it with the journal and with
// what PostgreSQL recorded.
func (h *harness) check(ctx context.Context) (*summary, error) {
	j, err := expectedJournal(h.env.accounts)
	if err != nil {
		return nil, err
	}
	within := 3 * time.Minute
	if dl, ok := ctx.Deadline(); ok {
		within = min(within, time.Until(dl)-15*time.Second)
	}
	c, err := consumeTopic(ctx, h.env.kafkaAddrs, h.env.kafkaOpts, h.o.events, max(within, 10*time.Second))
	if err != nil {
		return nil, err
	}
	recs, ends := c.recs, c.ends
	for i := range recs {
		if t, ok := h.env.produces.arrival(recs[i].partition, recs[i].ts); ok {
			recs[i].arrived = t
		}
	}
	s := h.newSummary()
	s.Redelivered = c.again
	if len(c.errs) > 0 && int64(len(recs)) < c.endTotal() {
		// A checker that cannot read the topic must not pass for lost
		// events: say why it read too little.
		for _, e := range c.errs {
			s.Evidence = append(s.Evidence, fmt.Sprintf("the checker's consumer read %d of %d records; it saw: %s", len(recs), c.endTotal(), e))
		}
	}
	for _, off := range ends {
		s.TopicEndOffsets += off
	}
	a := compare(recs, j, s)
	if err := h.evidence(ctx, s, a, recs, j); err != nil {
		return nil, err
	}
	if err := h.checkCursorHistory(ctx, s); err != nil {
		return nil, err
	}
	if h.env.multi != nil {
		s.UnknownTokenRequests = h.env.multi.Unknown()
	}
	if e := h.manyEnd; e != nil {
		for i := range s.Accounts {
			s.Accounts[i].HeldBy = e.holders[s.Accounts[i].SourceID]
		}
	}
	if err := h.partitionReport(ctx, s, recs, ends); err != nil {
		return nil, err
	}
	return s, nil
}

// consumeTopic reads the topic from the start with franz-go, a client
// independent of ingestd's kafka-go producer, seeded with every broker and
// configured with opts (TLS, SASL), until it has reached the expected count
// or the topic's end offsets and the count has been stable for stableFor,
// or within passes. It returns the records in partition, offset order and
// each partition's end offset.
//
// Each (partition, offset) is judged once: after a partition's leader
// moved, a consumer may rewind the partition and deliver records again,
// which are the same records, not duplicates written by ingestd (those sit
// at offsets of their own).
func consumeTopic(ctx context.Context, seeds []string, opts []kgo.Opt, want int, within time.Duration) (*consumed, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(seeds...),
		kgo.ConsumeTopics(topicName),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka consumer: %w", err)
	}
	defer cl.Close()
	// The final instance has exited, so nothing writes any more: the end
	// offsets are the exact number of records the topic holds.
	ends, err := endOffsets(ctx, cl)
	if err != nil {
		return nil, err
	}
	c := &consumed{ends: ends}
	endTotal := c.endTotal()

	var (
		out    []record
		seen   = offsetSet{}
		logged = map[string]bool{}
	)
	deadline := time.Now().Add(within)
	grew := time.Now()
	for time.Now().Before(deadline) {
		reached := len(out) >= want || int64(len(out)) >= endTotal
		if reached && time.Since(grew) >= stableFor {
			break
		}
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fetches := cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := len(out)
		fetches.EachRecord(func(r *kgo.Record) {
			if !seen.add(r.Partition, r.Offset) {
				c.again++
				return
			}
			out = append(out, decode(r))
		})
		if len(out) > n {
			grew = time.Now()
		}
		// Errors are retried by the client; the deadline bounds them. The
		// first few distinct ones are kept to explain a short read.
		fetches.EachError(func(_ string, _ int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			if msg := err.Error(); !logged[msg] && len(c.errs) < maxExamples {
				logged[msg] = true
				c.errs = append(c.errs, msg)
			}
		})
	}
	slices.SortStableFunc(out, func(a, b record) int {
		return cmp.Or(cmp.Compare(a.partition, b.partition), cmp.Compare(a.offset, b.offset))
	})
	c.recs = out
	return c, nil
}

// consumed is what consumeTopic read.
type consumed struct {
	// recs are the records in partition, offset order, each once.
	recs []record
	// ends is each partition's end offset.
	ends map[int32]int64
	// again counts the records delivered again at a (partition, offset)
	// already read, and dropped.
	again int
	// errs are the distinct fetch errors the consumer saw.
	errs []string
}

// endTotal is the number of records the topic holds.
func (c *consumed) endTotal() int64 {
	var n int64
	for _, off := range c.ends {
		n += off
	}
	return n
}

// offsetSet is the (partition, offset) pairs a consumer delivered.
type offsetSet map[partitionOffset]struct{}

type partitionOffset struct {
	partition int32
	offset    int64
}

// add records a delivery and reports whether it is the first of its
// (partition, offset).
func (s offsetSet) add(partition int32, offset int64) bool {
	k := partitionOffset{partition, offset}
	if _, ok := s[k]; ok {
		return false
	}
	s[k] = struct{}{}
	return true
}

// endOffsets returns the high watermark of every partition of the topic,
// asking again on fresh metadata while a partition's leader is moving.
func endOffsets(ctx context.Context, cl *kgo.Client) (map[int32]int64, error) {
	for attempt := 1; ; attempt++ {
		ends, err := endOffsetsOnce(ctx, cl)
		if err == nil || attempt == 20 || !kerr.IsRetriable(err) {
			return ends, err
		}
		cl.ForceMetadataRefresh()
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

func endOffsetsOnce(ctx context.Context, cl *kgo.Client) (map[int32]int64, error) {
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topicName)
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("kafka metadata of %s: %w", topicName, err)
	}
	if len(mresp.Topics) != 1 {
		return nil, fmt.Errorf("kafka metadata of %s: %d topics in the answer", topicName, len(mresp.Topics))
	}
	if err := kerr.ErrorForCode(mresp.Topics[0].ErrorCode); err != nil {
		return nil, fmt.Errorf("kafka metadata of %s (did any instance create it?): %w", topicName, err)
	}
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topicName
	for _, p := range mresp.Topics[0].Partitions {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p.Partition
		rp.Timestamp = -1 // the latest offset: the high watermark
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("kafka end offsets of %s: %w", topicName, err)
	}
	out := map[int32]int64{}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("kafka end offset of %s partition %d: %w", topicName, p.Partition, err)
			}
			out[p.Partition] = p.Offset
		}
	}
	return out, nil
}

// decode reads what the checker needs from a record.
func decode(r *kgo.Record) record {
	rec := record{partition: r.Partition, offset: r.Offset, key: string(r.Key), seq: -1, epoch: -1, ts: r.Timestamp}
	for _, hd := range r.Headers {
		switch hd.Key {
		case event.HeaderID:
			rec.ceID = string(hd.Value)
		case event.HeaderSource:
			rec.source = string(hd.Value)
		case publish.HeaderSeq:
			if v, err := strconv.ParseInt(string(hd.Value), 10, 64); err == nil {
				rec.seq = v
			}
		case publish.HeaderEpoch:
			if v, err := strconv.ParseInt(string(hd.Value), 10, 64); err == nil {
				rec.epoch = v
			}
		}
	}
	ev, err := event.ParsePayload(r.Value)
	if err != nil {
		rec.err = err
		return rec
	}
	rec.id, rec.account, rec.orderID, rec.revision = ev.ID, ev.Account, ev.OrderID, ev.Revision
	return rec
}

// analysis is what compare found, for the evidence that needs PostgreSQL.
type analysis struct {
	occ  map[string][]int // event id -> indices into the records
	lost []int            // journal entries never received
	dups []string         // expected ids received more than once, by first arrival
}

// compare checks the records (in partition, offset order) against the
// journal and fills in the counts of s, with evidence of what it can tell
// from the records alone.
func compare(recs []record, j *journal, s *summary) *analysis {
	a := &analysis{occ: map[string][]int{}}
	s.Received = len(recs)
	s.Accounts = make([]accountResult, len(j.accounts))
	for ai, name := range j.accounts {
		s.Accounts[ai] = accountResult{Account: name, SourceID: event.ProviderYandex + "/" + name}
	}
	for i := range j.ids {
		s.Accounts[j.acct[i]].EventsExpected++
	}
	for i := range recs {
		r := &recs[i]
		switch {
		case r.err != nil:
			s.bad("%s: payload does not parse: %v", r, r.err)
			continue
		case r.ceID != r.id:
			s.bad("%s: ce_id %q but payload event_id %q", r, r.ceID, r.id)
		case r.key != event.ProviderYandex+":"+r.orderID:
			s.bad("%s: key %q but order_id %q", r, r.key, r.orderID)
		case r.seq < 0 || r.epoch < 0:
			s.bad("%s: no valid %s or %s header", r, publish.HeaderSeq, publish.HeaderEpoch)
		}
		k, ok := j.byID[r.id]
		if ok && (j.claim[k] != r.orderID || j.rev[k] != r.revision) {
			s.bad("%s: event id of %s but payload says claim %s rev %d", r, j.describeEntry(k), r.orderID, r.revision)
		}
		// The record must name the account whose journal the entry came
		// from, in the payload and in ce_source: the id is a hash of the
		// account too, but a consumer routes by these.
		ai := j.accountOf(r)
		if ok {
			if want := j.acct[k]; ai != want {
				s.bad("%s: payload account %q but the event is %s", r, r.account, j.describeEntry(k))
				ai = want
			}
		}
		if ai >= 0 {
			s.Accounts[ai].Received++
			if want := event.SourceURI(event.ProviderYandex, j.accounts[ai]); r.source != want {
				s.bad("%s: ce_source %q, want %q", r, r.source, want)
			}
		}
		a.occ[r.id] = append(a.occ[r.id], i)
	}
	s.Distinct = len(a.occ)

	ids := make([]string, 0, len(a.occ))
	for id := range a.occ {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(x, y string) int { return cmp.Compare(a.occ[x][0], a.occ[y][0]) })
	for _, id := range ids {
		idxs := a.occ[id]
		k, ok := j.byID[id]
		if !ok {
			s.Unexpected++
			s.Duplicated += len(idxs)
			if ai := j.accountOf(&recs[idxs[0]]); ai >= 0 {
				s.Accounts[ai].Duplicated += len(idxs)
			}
			s.example(&s.Evidence, "unexpected id %s (no journal entry has it) at %s", id, &recs[idxs[0]])
			continue
		}
		s.Accounts[j.acct[k]].Distinct++
		if len(idxs) > 1 {
			s.Duplicated += len(idxs) - 1
			s.Accounts[j.acct[k]].Duplicated += len(idxs) - 1
			a.dups = append(a.dups, id)
		}
	}
	for i, id := range j.ids {
		if len(a.occ[id]) == 0 {
			a.lost = append(a.lost, i)
			s.Accounts[j.acct[i]].Lost++
		}
	}
	s.Lost = len(a.lost)

	// Partition order: ingestd publishes each partition in outbox order
	// (seq strictly increasing), and a publisher whose lease was taken over
	// must never write after its successor (epoch never decreasing).
	for i := 1; i < len(recs); i++ {
		prev, cur := &recs[i-1], &recs[i]
		if prev.partition != cur.partition || prev.err != nil || cur.err != nil {
			continue
		}
		if cur.seq <= prev.seq {
			s.SeqRegressions++
			s.example(&s.Evidence, "partition order: %s follows %s", cur, prev)
		}
		if cur.epoch < prev.epoch {
			s.StaleEpochWrites++
			s.example(&s.Evidence, "stale epoch: %s written after %s by a newer publisher", cur, prev)
		}
	}

	// Per-key order: each key in one partition, its distinct events in
	// journal order. A duplicate is counted as such, not again here: only
	// first arrivals are compared.
	byKey := map[string][]int{}
	var keys []string
	for i := range recs {
		if recs[i].err != nil {
			continue
		}
		k := recs[i].key
		if byKey[k] == nil {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], i)
	}
	for _, k := range keys {
		idxs := byKey[k]
		first := &recs[idxs[0]]
		for _, ri := range idxs[1:] {
			if recs[ri].partition != first.partition {
				s.KeysSplit++
				s.example(&s.Evidence, "key %s in two partitions: %s and %s", k, first, &recs[ri])
				break
			}
		}
		seen := map[string]bool{}
		last, lastRec := -1, -1
		outOfOrder := false
		for _, ri := range idxs {
			r := &recs[ri]
			ji, ok := j.byID[r.id]
			if !ok || seen[r.id] {
				continue
			}
			seen[r.id] = true
			if ji < last {
				s.OrderViolations++
				s.Accounts[j.acct[ji]].OrderViolations++
				outOfOrder = true
				s.example(&s.Evidence, "key %s out of order: %s at %s arrived after %s at %s",
					k, j.describeEntry(ji), r, j.describeEntry(last), &recs[lastRec])
				continue
			}
			last, lastRec = ji, ri
		}
		if outOfOrder {
			s.KeysOutOfOrder++
		}
	}
	return a
}

// evidence explains lost and duplicated events with what PostgreSQL
// recorded about them: their outbox seq and partition, and the partition's
// publish watermark.
func (h *harness) evidence(ctx context.Context, s *summary, a *analysis, recs []record, j *journal) error {
	if len(a.lost) > 0 {
		type span struct {
			n        int
			min, max int64
		}
		byPart := map[int32]*span{}
		notInOutbox := 0
		for n, ji := range a.lost {
			seq, part, wm, found, err := h.outboxRow(ctx, j.ids[ji])
			if err != nil {
				return err
			}
			if !found {
				notInOutbox++
				if n < maxExamples {
					s.example(&s.Evidence, "lost %s: not in the outbox", j.describeEntry(ji))
				}
				continue
			}
			sp := byPart[part]
			if sp == nil {
				sp = &span{min: seq, max: seq}
				byPart[part] = sp
			}
			sp.n++
			sp.min, sp.max = min(sp.min, seq), max(sp.max, seq)
			if n < maxExamples {
				marked := "above the watermark (never marked published)"
				if seq <= wm {
					marked = "at or below the watermark (marked published)"
				}
				s.example(&s.Evidence, "lost %s: outbox seq %d in partition %d, watermark %d: %s; Kafka around it: %s",
					j.describeEntry(ji), seq, part, wm, marked, neighbours(recs, part, seq))
			}
		}
		if notInOutbox > 0 {
			s.Evidence = append(s.Evidence, fmt.Sprintf("%d lost events were never committed to the outbox", notInOutbox))
		}
		for _, p := range slices.Sorted(maps.Keys(byPart)) {
			sp := byPart[p]
			s.Evidence = append(s.Evidence, fmt.Sprintf("%d lost events in the outbox of partition %d, seq %d..%d", sp.n, p, sp.min, sp.max))
		}
	}
	summarizeDuplicates(s, a, recs)
	for n, id := range a.dups {
		if n >= maxExamples {
			s.Evidence = append(s.Evidence, fmt.Sprintf("... and %d more duplicated ids", len(a.dups)-n))
			break
		}
		seq, part, wm, found, err := h.outboxRow(ctx, id)
		if err != nil {
			return err
		}
		var where []string
		for _, ri := range a.occ[id] {
			where = append(where, recs[ri].String())
		}
		row := "not in the outbox"
		if found {
			row = fmt.Sprintf("outbox seq %d partition %d (watermark %d)", seq, part, wm)
		}
		s.Evidence = append(s.Evidence, fmt.Sprintf("duplicated %s: %v; %s", j.describeEntry(j.byID[id]), where, row))
	}
	return nil
}

// clockSpan formats a span of unix-nanosecond times; "?" for unknown times.
func clockSpan(s span[int64]) string {
	if s.lo <= 0 {
		return "?"
	}
	lo, hi := clock(time.Unix(0, s.lo)), clock(time.Unix(0, s.hi))
	if lo == hi {
		return lo
	}
	return lo + ".." + hi
}

// clock formats a timestamp for evidence lines.
func clock(t time.Time) string { return t.Local().Format("15:04:05.000") }

// span is the range of a value over a group of records.
type span[T cmp.Ordered] struct{ lo, hi T }

func (s *span[T]) add(v T, first bool) {
	if first || v < s.lo {
		s.lo = v
	}
	if first || v > s.hi {
		s.hi = v
	}
}

// summarizeDuplicates groups the duplicates by partition and by the epochs
// of the first and the second copy, so that a re-sent batch reads as one
// line: which publisher wrote it first, which again, at which offsets and
// when each write was issued.
func summarizeDuplicates(s *summary, a *analysis, recs []record) {
	type key struct {
		part   int32
		e1, e2 int64
	}
	type group struct {
		n          int
		seq        span[int64]
		off1, off2 span[int64]
		ts1, ts2   span[int64]
		in1, in2   span[int64]
	}
	groups := map[key]*group{}
	var order []key
	for _, id := range a.dups {
		r1, r2 := &recs[a.occ[id][0]], &recs[a.occ[id][1]]
		k := key{r2.partition, r1.epoch, r2.epoch}
		g := groups[k]
		first := g == nil
		if first {
			g = &group{}
			groups[k] = g
			order = append(order, k)
		}
		g.n++
		g.seq.add(r1.seq, first)
		g.off1.add(r1.offset, first)
		g.off2.add(r2.offset, first)
		g.ts1.add(r1.ts.UnixNano(), first)
		g.ts2.add(r2.ts.UnixNano(), first)
		g.in1.add(r1.arrived.UnixNano(), first)
		g.in2.add(r2.arrived.UnixNano(), first)
	}
	for _, k := range order {
		g := groups[k]
		s.Evidence = append(s.Evidence, fmt.Sprintf(
			"p%d: %d events (seq %d..%d) written by epoch %d at offsets %d..%d (issued %s, arrived %s) and again by epoch %d at offsets %d..%d (issued %s, arrived %s)",
			k.part, g.n, g.seq.lo, g.seq.hi,
			k.e1, g.off1.lo, g.off1.hi, clockSpan(g.ts1), clockSpan(g.in1),
			k.e2, g.off2.lo, g.off2.hi, clockSpan(g.ts2), clockSpan(g.in2)))
	}
}

// outboxRow looks an event up in the outbox.
func (h *harness) outboxRow(ctx context.Context, id string) (seq int64, part int32, watermark int64, found bool, err error) {
	err = h.env.pool.QueryRow(ctx, `
SELECT o.seq, o.partition, coalesce(p.last_seq, 0)
FROM outbox o LEFT JOIN publish_progress p ON p.partition = o.partition
WHERE o.event_id = $1`, id).Scan(&seq, &part, &watermark)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, 0, false, fmt.Errorf("look up event %s in the outbox: %w", id, err)
	}
	return seq, part, watermark, true, nil
}

// neighbours describes the records of partition part whose seq is nearest
// below and above seq: where a lost row should have been.
func neighbours(recs []record, part int32, seq int64) string {
	var below, above *record
	for i := range recs {
		r := &recs[i]
		if r.partition != part {
			continue
		}
		if r.seq < seq && (below == nil || r.seq > below.seq) {
			below = r
		}
		if r.seq > seq && (above == nil || r.seq < above.seq) {
			above = r
		}
	}
	describe := func(r *record) string {
		if r == nil {
			return "nothing"
		}
		return r.String()
	}
	return describe(below) + " then " + describe(above)
}

// checkCursorHistory checks, for every account, that its cursor moved as
// one linear chain (each change starting where the previous one ended: no
// two writers ever advanced from the same cursor) and ended after the
// account's last entry, and that no other source has a history.
func (h *harness) checkCursorHistory(ctx context.Context, s *summary) error {
	s.CursorAtEnd = true
	for ai, a := range h.env.accounts {
		r := &s.Accounts[ai]
		if err := h.checkSourceHistory(ctx, s, a, r); err != nil {
			return err
		}
		s.CursorCommits += r.CursorCommits
		s.CursorEvents += r.CursorEvents
		s.CursorForks += r.CursorForks
		s.CursorAtEnd = s.CursorAtEnd && r.CursorAtEnd
	}
	rows, err := h.env.pool.Query(ctx, `SELECT DISTINCT source_id FROM cursor_history ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("read cursor history: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("read cursor history: %w", err)
	}
	for _, id := range ids {
		if !slices.ContainsFunc(h.env.accounts, func(a *simAccount) bool { return a.sourceID == id }) {
			s.UnknownSources = append(s.UnknownSources, id)
		}
	}
	var outbox int64
	if err := h.env.pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&outbox); err != nil {
		return fmt.Errorf("count outbox rows: %w", err)
	}
	s.OutboxRows = outbox
	return nil
}

// checkSourceHistory reads one account's cursor history into r.
func (h *harness) checkSourceHistory(ctx context.Context, s *summary, a *simAccount, r *accountResult) error {
	rows, err := h.env.pool.Query(ctx, `
SELECT id, cursor, coalesce(prev_cursor, ''), event_count, recorded_at
FROM cursor_history WHERE source_id = $1 ORDER BY id`, a.sourceID)
	if err != nil {
		return fmt.Errorf("read cursor history of %s: %w", a.sourceID, err)
	}
	defer rows.Close()
	prev := ""
	for rows.Next() {
		var (
			id           int64
			cur, from    string
			count        int
			recordedAtTS time.Time
		)
		if err := rows.Scan(&id, &cur, &from, &count, &recordedAtTS); err != nil {
			return fmt.Errorf("read cursor history of %s: %w", a.sourceID, err)
		}
		r.CursorCommits++
		r.CursorEvents += count
		if from != prev {
			r.CursorForks++
			s.example(&s.Evidence, "cursor history id %d of %s (%s) advanced from position %s to %s, but the cursor was at %s",
				id, a.sourceID, recordedAtTS.Format(time.RFC3339Nano), a.posOf(from), a.posOf(cur), a.posOf(prev))
		}
		prev = cur
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read cursor history of %s: %w", a.sourceID, err)
	}
	r.CursorAtEnd = prev == a.wantCursor
	return nil
}

// partitionReport sets, per partition, what Kafka holds next to the publish
// watermark PostgreSQL recorded.
func (h *harness) partitionReport(ctx context.Context, s *summary, recs []record, ends map[int32]int64) error {
	wms := map[int32]int64{}
	rows, err := h.env.pool.Query(ctx, `SELECT partition, last_seq FROM publish_progress`)
	if err != nil {
		return fmt.Errorf("read publish progress: %w", err)
	}
	for rows.Next() {
		var p int32
		var wm int64
		if err := rows.Scan(&p, &wm); err != nil {
			rows.Close()
			return fmt.Errorf("read publish progress: %w", err)
		}
		wms[p] = wm
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read publish progress: %w", err)
	}
	info := map[int32]*partitionInfo{}
	get := func(p int32) *partitionInfo {
		if info[p] == nil {
			info[p] = &partitionInfo{Partition: p, Watermark: wms[p], EndOffset: ends[p]}
		}
		return info[p]
	}
	for p := range ends {
		get(p)
	}
	for p := range wms {
		get(p)
	}
	for i := range recs {
		pi := get(recs[i].partition)
		pi.Records++
		pi.MaxSeq = max(pi.MaxSeq, recs[i].seq)
	}
	for _, p := range slices.Sorted(maps.Keys(info)) {
		s.Partitions = append(s.Partitions, *info[p])
	}
	return nil
}
