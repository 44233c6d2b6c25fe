package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/sim"
)

// journalAccount is one simulated account and what the consumer received
// of it.
type journalAccount struct {
	name   string
	token  string
	source string // its events' ce_source
	y      *sim.Yandex

	// Written by the consumer's goroutine only (and before it starts);
	// read after it stopped.
	indexed int         // entries [0, indexed) are in the consumer's index
	recv    []time.Time // receipt of entry i, zero until received
	// got counts distinct entries received; last is the receipt time of
	// the latest (unix nanoseconds). Both are read while the consumer runs.
	got  atomic.Int64
	last atomic.Int64
}

func newJournalAccount(name string, y *sim.Yandex) *journalAccount {
	return &journalAccount{name: name, token: accountToken(name), source: "/ingestd/" + event.ProviderYandex + "/" + name, y: y}
}

// entryRef names one journal entry of one account.
type entryRef struct {
	a *journalAccount
	i int
}

// accountsConsumer reads the topic from the start and records when each
// journal entry's event first arrived, for every account at once. Entries
// are matched by event id; the ids of a quiet account's entries are
// computed as its journal grows, those of the big account up front.
type accountsConsumer struct {
	accts    []*journalAccount
	bySource map[string]*journalAccount
	index    map[string]entryRef

	done chan struct{} // closed when run returned
	err  error         // run's result, read after done
	// Written by the consumer's goroutine only; read after it stopped.
	duplicates int64
	unmatched  int64
}

func newAccountsConsumer(accts []*journalAccount) *accountsConsumer {
	c := &accountsConsumer{accts: accts, bySource: make(map[string]*journalAccount, len(accts)), index: map[string]entryRef{}, done: make(chan struct{})}
	for _, a := range accts {
		c.bySource[a.source] = a
	}
	return c
}

// extend indexes a's entries up to n.
func (c *accountsConsumer) extend(a *journalAccount, n int) {
	if t := a.y.Total(); t >= 0 {
		n = min(n, t)
	}
	for i := a.indexed; i < n; i++ {
		e := a.y.Entry(i)
		id := event.ID(event.ProviderYandex, a.name, e.ClaimID, strconv.FormatInt(e.OperationID, 10), e.ChangeType, strconv.FormatInt(e.Revision, 10))
		c.index[id] = entryRef{a, i}
	}
	if n > len(a.recv) {
		a.recv = append(a.recv, make([]time.Time, n-len(a.recv))...)
	}
	a.indexed = max(a.indexed, n)
}

// start runs the consumer until the returned stop is called (which waits
// for it; calling it again is harmless).
func (c *accountsConsumer) start(ctx context.Context, broker string) (stop func()) {
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(c.done)
		c.err = c.run(cctx, broker)
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// failed returns the consumer's error if it stopped on its own.
func (c *accountsConsumer) failed() error {
	select {
	case <-c.done:
		if c.err != nil {
			return c.err
		}
		return errors.New("the consumer stopped")
	default:
		return nil
	}
}

// complete reports whether every entry available upstream was received.
func (c *accountsConsumer) complete() bool {
	for _, a := range c.accts {
		if a.got.Load() < int64(a.y.Available()) {
			return false
		}
	}
	return true
}

func (c *accountsConsumer) run(ctx context.Context, broker string) error {
	return consumeTopic(ctx, broker, "accounts", c.record)
}

// record matches r to its journal entry by its ce_id header. An id not yet
// indexed is looked for among the entries its account (named by ce_source)
// has appended since the last look.
func (c *accountsConsumer) record(r *kgo.Record, now time.Time) {
	var id, src string
	for _, h := range r.Headers {
		switch h.Key {
		case event.HeaderID:
			id = string(h.Value)
		case event.HeaderSource:
			src = string(h.Value)
		}
	}
	ref, ok := c.index[id]
	if !ok {
		if a := c.bySource[src]; a != nil && a.y.Available() > a.indexed {
			c.extend(a, a.y.Available())
			ref, ok = c.index[id]
		}
	}
	if !ok {
		c.unmatched++
		return
	}
	a := ref.a
	if !a.recv[ref.i].IsZero() {
		c.duplicates++
		return
	}
	a.recv[ref.i] = now
	a.last.Store(now.UnixNano())
	a.got.Add(1)
}

// accountsHandler wraps the simulator of every account. It records the big
// account's first request after the burst (where its catch-up starts), and
// on request makes every empty page carry a cursor the client has not seen,
// as an upstream may do whose cursor encodes more than a position: the
// simulator repeats the cursor it was given.
type accountsHandler struct {
	next    http.Handler
	bigAuth string

	armed    atomic.Bool
	bigFirst atomic.Int64 // unix nanoseconds; 0 until seen

	// bump is set when empty pages get new cursors. A new cursor is the
	// simulator's with a suffix after bumpMark, which is taken off again
	// before a request reaches the simulator.
	bump  atomic.Bool
	bumps atomic.Int64
}

// bumpMark starts the suffix of a bumped cursor. The simulator's cursors
// are a prefix and base64, so they never contain it.
const bumpMark = "!"

// emptyTail ends every empty page the simulator serves.
const emptyTail = `","events":[]}`

func newAccountsHandler(next http.Handler, bigToken string) *accountsHandler {
	return &accountsHandler{next: next, bigAuth: "Bearer " + bigToken}
}

// arm makes the next request of the big account the start of its catch-up.
func (h *accountsHandler) arm() { h.armed.Store(true) }

// firstBig is the big account's first request after arm.
func (h *accountsHandler) firstBig() (time.Time, bool) {
	v := h.bigFirst.Load()
	return time.Unix(0, v), v != 0
}

// bumpCursors gives every empty page from now on a new cursor.
func (h *accountsHandler) bumpCursors() { h.bump.Store(true) }

func (h *accountsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.armed.Load() && r.Header.Get("Authorization") == h.bigAuth {
		h.bigFirst.CompareAndSwap(0, time.Now().UnixNano())
	}
	if !h.bump.Load() {
		h.next.ServeHTTP(w, r)
		return
	}
	if err := unbump(r); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rec := &bufferedResponse{header: http.Header{}, status: http.StatusOK}
	h.next.ServeHTTP(rec, r)
	body := rec.body.Bytes()
	if rec.status == http.StatusOK && bytes.HasSuffix(body, []byte(emptyTail)) {
		n := h.bumps.Add(1)
		body = append(append(body[:len(body)-len(emptyTail):len(body)-len(emptyTail)], bumpMark+strconv.FormatInt(n, 10)...), emptyTail...)
	}
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.status)
	_, _ = w.Write(body)
}

// unbump takes a bumped cursor's suffix off the request body, so that the
// simulator sees the cursor it issued.
func unbump(r *http.Request) error {
	raw, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("read the request: %w", err)
	}
	var req struct {
		Cursor *string `json:"cursor"`
	}
	if json.Unmarshal(raw, &req) == nil && req.Cursor != nil {
		if c, _, ok := strings.Cut(*req.Cursor, bumpMark); ok {
			if raw, err = json.Marshal(map[string]string{"cursor": c}); err != nil {
				return err
			}
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	r.ContentLength = int64(len(raw))
	return nil
}

// bufferedResponse keeps a response so that it can be changed before it is
// sent.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) WriteHeader(status int)      { b.status = status }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
