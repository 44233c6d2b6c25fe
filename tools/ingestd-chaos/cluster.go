package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Cluster mode (-cluster): the children publish to three in-process brokers
// over TLS with SASL/SCRAM-SHA-512, as to a production cluster, while a
// churner moves partition leaders every few hundred milliseconds and now and
// then takes a broker away and brings it back on the same node id and port.
const (
	clusterBrokers = 3
	saslMechanism  = "SCRAM-SHA-512"
	saslUser       = "ingestd-chaos"
	// brokerDownMin and brokerDownMax bound how long a removed broker stays
	// away before it is added back.
	brokerDownMin = 500 * time.Millisecond
	brokerDownMax = 3 * time.Second
	// readdAttempts bounds the churner's tries to add a broker back (its
	// port may be taken meanwhile); after them the cluster runs one short.
	readdAttempts = 20
)

// connTracker wraps the brokers' listeners (kfake.ListenFn) so that the
// connections a broker accepted are closed when its listener is: kfake's
// RemoveNode only stops accepting, and a broker that goes away in
// production takes its connections with it, leaving requests in flight of
// unknown outcome.
type connTracker struct {
	// dropped counts connections closed because their listener was.
	dropped atomic.Int64
}

// listen is a kfake.ListenFn.
func (t *connTracker) listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return &trackedListener{Listener: ln, t: t, conns: map[*trackedConn]struct{}{}}, nil
}

type trackedListener struct {
	net.Listener
	t *connTracker

	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}

	closeOnce sync.Once
	closeErr  error
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.conns[tc] = struct{}{}
	return tc, nil
}

// Close stops accepting and closes every connection still open. Every call
// returns only once that is done: kfake's accept loop closes the listener
// too when its Accept fails, and may get there first.
func (l *trackedListener) Close() error {
	l.closeOnce.Do(func() {
		l.closeErr = l.Listener.Close()
		l.mu.Lock()
		l.closed = true
		conns := l.conns
		l.conns = nil
		l.mu.Unlock()
		for c := range conns {
			_ = c.Conn.Close()
			l.t.dropped.Add(1)
		}
	})
	return l.closeErr
}

type trackedConn struct {
	net.Conn
	l *trackedListener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// churnStats is what the churner did.
type churnStats struct {
	// Shuffles counts leader elections of every partition at once
	// (ShufflePartitionLeaders, and the one each removal and re-addition of
	// a broker makes); LeaderChanges counts the partitions of the topic
	// whose leader changed in them.
	Shuffles      int `json:"leader_shuffles"`
	LeaderChanges int `json:"partition_leader_changes"`
	Removals      int `json:"broker_removals"`
	// RemovalsMidProduce counts the removals made while a produce request
	// to the removed broker was in flight (see churner.onProduce).
	RemovalsMidProduce int `json:"broker_removals_mid_produce"`
	Returns            int `json:"broker_returns"`
	// DroppedConns counts client connections closed by the removals.
	DroppedConns int64 `json:"connections_dropped"`
}

// churner moves partition leaders and removes and re-adds brokers until it
// is stopped. Its events are kept for the harness to print, so that only
// the harness's goroutine writes the round log.
//
// A removal that falls due is armed rather than made at once: the next
// produce request to a removable broker removes that broker while the
// request is in flight (onProduce), so that the producer loses its
// connection with a write of unknown outcome, the case ingestd must settle
// by reading the partition back. When no such request comes within
// armWait, a random removable broker is removed anyway.
type churner struct {
	c         *kfake.Cluster
	tracker   *connTracker
	ports     map[int32]int // node id -> port
	removable []int32
	every     time.Duration
	removeAvg time.Duration
	// rng is used by the churner's goroutine only.
	rng *rand.Rand

	// armed is set while a removal waits for a produce request, for at
	// most armWait.
	armed   atomic.Bool
	armWait time.Duration
	// removeMu serializes removals and re-additions, which come from the
	// churner's goroutine, from kfake's (onProduce) and from stop.
	removeMu sync.Mutex
	stopped  bool

	mu     sync.Mutex
	stats  churnStats
	events []string
	// down is the node removed and not yet back (-1: none), downFor how
	// long it is to stay away, and backAt when it is due back.
	down    int32
	downFor time.Duration
	backAt  time.Time

	stopOnce sync.Once
	stopCh   chan struct{}
	done     chan struct{}
	started  bool
}

// armedFor bounds how long an armed removal waits for a produce request:
// long enough for a running publisher to write, short enough that a round
// without one (a successor waiting for its lease) does not skip a removal.
const armedFor = 2 * time.Second

// newChurner prepares a churner of c, whose brokers are node i at addrs[i].
// The controller (kfake's last broker) is never removed: kfake does not
// move the controller, and a broker added back is a new controller object,
// which would refuse every topic creation from then on.
func newChurner(c *kfake.Cluster, tracker *connTracker, addrs []string, every, removeAvg time.Duration, seed int64) (*churner, error) {
	ch := &churner{
		c: c, tracker: tracker, ports: map[int32]int{}, every: every, removeAvg: removeAvg,
		rng:     rand.New(rand.NewPCG(uint64(seed), 0x636875726e)),
		armWait: armedFor,
		down:    -1,
		stopCh:  make(chan struct{}),
		done:    make(chan struct{}),
	}
	for i, a := range addrs {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("broker address %q: %w", a, err)
		}
		port, err := strconv.Atoi(p)
		if err != nil {
			return nil, fmt.Errorf("broker address %q: %w", a, err)
		}
		ch.ports[int32(i)] = port
		if i < len(addrs)-1 {
			ch.removable = append(ch.removable, int32(i))
		}
	}
	return ch, nil
}

// start runs the churner in its own goroutine.
func (ch *churner) start() {
	ch.started = true
	go ch.run()
}

// stop ends the churner and adds a removed broker back, so that the checker
// reads the whole cluster. It is safe to call more than once, and without
// start.
func (ch *churner) stop() {
	ch.stopOnce.Do(func() {
		close(ch.stopCh)
		if ch.started {
			<-ch.done
		}
		ch.removeMu.Lock()
		defer ch.removeMu.Unlock()
		ch.stopped = true
		ch.armed.Store(false)
		for range readdAttempts {
			ch.mu.Lock()
			down := ch.down
			ch.mu.Unlock()
			if down < 0 {
				return
			}
			ch.readd(down)
		}
	})
}

// counts returns what the churner did so far.
func (ch *churner) counts() churnStats {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.stats
}

// takeEvents returns the events not taken yet.
func (ch *churner) takeEvents() []string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ev := ch.events
	ch.events = nil
	return ev
}

func (ch *churner) event(format string, args ...any) {
	ch.events = append(ch.events, clock(time.Now())+" "+fmt.Sprintf(format, args...))
}

// jitter returns d scaled by a random factor in [0.5, 1.5).
func (ch *churner) jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.5 + ch.rng.Float64()))
}

func (ch *churner) run() {
	defer close(ch.done)
	// The first removal comes early, so that even a short run has one.
	nextRemoval := time.Now().Add(ch.jitter(ch.removeAvg / 4))
	var armedAt time.Time
	failedReadds := 0
	t := time.NewTimer(ch.jitter(ch.every))
	defer t.Stop()
	for {
		select {
		case <-ch.stopCh:
			return
		case <-t.C:
		}
		ch.mu.Lock()
		down, backAt := ch.down, ch.backAt
		ch.mu.Unlock()
		now := time.Now()
		switch {
		case down >= 0:
			armedAt = time.Time{}
			if now.Before(backAt) || failedReadds >= readdAttempts {
				ch.shuffle()
				break
			}
			ch.removeMu.Lock()
			ok := ch.readd(down)
			ch.removeMu.Unlock()
			if !ok {
				failedReadds++
				break
			}
			failedReadds = 0
			nextRemoval = time.Now().Add(ch.jitter(ch.removeAvg))
		case !now.Before(nextRemoval) && len(ch.removable) > 0:
			if armedAt.IsZero() {
				ch.mu.Lock()
				ch.downFor = brokerDownMin + time.Duration(ch.rng.Int64N(int64(brokerDownMax-brokerDownMin)+1))
				ch.mu.Unlock()
				armedAt = now
				ch.armed.Store(true)
			} else if now.Sub(armedAt) >= ch.armWait && ch.armed.CompareAndSwap(true, false) {
				ch.removeMu.Lock()
				ch.remove(ch.removable[ch.rng.IntN(len(ch.removable))], false)
				ch.removeMu.Unlock()
			}
			// Leaders keep moving while the removal waits; once it is
			// made (by onProduce or just above), the next one is
			// scheduled when the broker is back.
			ch.shuffle()
		default:
			ch.shuffle()
		}
		t.Reset(ch.jitter(ch.every))
	}
}

// onProduce is called by the produce observer, inside kfake, for every
// produce request that reaches node, before the broker handles it. While a
// removal is armed, a request to a removable broker removes that broker
// there and then: its connections, this request's among them, are dropped,
// and the request itself is refused, as its broker no longer leads
// anything. The producer cannot tell whether it was written.
func (ch *churner) onProduce(node int32) {
	if !ch.armed.Load() || !slices.Contains(ch.removable, node) {
		return
	}
	ch.removeMu.Lock()
	defer ch.removeMu.Unlock()
	if ch.stopped || !ch.armed.CompareAndSwap(true, false) {
		return
	}
	ch.remove(node, true)
}

// leaders returns the leader node of every partition of the topic; empty
// before the topic exists.
func (ch *churner) leaders() []int32 {
	var ls []int32
	for p := range int32(partitions) {
		l := ch.c.LeaderFor(topicName, p)
		if l < 0 {
			return nil
		}
		ls = append(ls, l)
	}
	return ls
}

// moved counts the partitions whose leader differs between before and after.
func moved(before, after []int32) int {
	if len(before) != len(after) {
		return 0
	}
	n := 0
	for i := range before {
		if before[i] != after[i] {
			n++
		}
	}
	return n
}

func (ch *churner) shuffle() {
	before := ch.leaders()
	ch.c.ShufflePartitionLeaders()
	after := ch.leaders()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.stats.Shuffles++
	ch.stats.LeaderChanges += moved(before, after)
}

// remove removes node, which is due back after downFor. The caller holds
// removeMu.
func (ch *churner) remove(node int32, midProduce bool) {
	before := ch.leaders()
	dropped := ch.tracker.dropped.Load()
	err := ch.c.RemoveNode(node)
	dropped = ch.tracker.dropped.Load() - dropped
	after := ch.leaders()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if err != nil {
		ch.event("could not remove broker %d: %v", node, err)
		return
	}
	ch.down = node
	ch.backAt = time.Now().Add(ch.downFor)
	ch.stats.Removals++
	ch.stats.Shuffles++
	ch.stats.LeaderChanges += moved(before, after)
	ch.stats.DroppedConns += dropped
	how := "removed"
	if midProduce {
		ch.stats.RemovalsMidProduce++
		how = "removed during a produce request to it"
	}
	ch.event("kafka: broker %d %s (%d client connections dropped), leaders now %v; back in %v", node, how, dropped, after, ch.downFor.Round(time.Millisecond))
}

// readd adds node back on its port and reports whether it could. The
// caller holds removeMu.
func (ch *churner) readd(node int32) bool {
	before := ch.leaders()
	_, _, err := ch.c.AddNode(node, ch.ports[node])
	after := ch.leaders()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if err != nil {
		ch.event("could not add broker %d back on port %d: %v", node, ch.ports[node], err)
		return false
	}
	ch.down = -1
	ch.stats.Returns++
	ch.stats.Shuffles++
	ch.stats.LeaderChanges += moved(before, after)
	ch.event("kafka: broker %d back on port %d, leaders now %v", node, ch.ports[node], after)
	return true
}
