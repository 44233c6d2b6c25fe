// Package failpoint lets the chaos harness and the fault tests crash ingestd
// at exact points of its data path, such as between a PostgreSQL commit and
// the Kafka produce, which random kills rarely hit.
//
// Points are armed only through INGESTD_FAILPOINTS, a comma-separated list
// of name=N: the Nth time the named point is reached, the process sends
// itself SIGKILL, exactly as `kill -9` would. Unarmed, Hit costs a nil
// check.
package failpoint

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Names of the points ingestd passes.
const (
	// AfterCommit is right after a page's transaction committed, before
	// the publisher is told about it.
	AfterCommit = "poller.after-commit"
	// AfterAck is right after Kafka acknowledged a batch, before its
	// watermark is recorded in PostgreSQL.
	AfterAck = "publish.after-ack"
	// BeforeWrite is right before a batch is handed to Kafka.
	BeforeWrite = "publish.before-write"
)

func known(name string) bool {
	switch name {
	case AfterCommit, AfterAck, BeforeWrite:
		return true
	}
	return false
}

// Set is a set of armed failpoints. A nil *Set has none armed.
type Set struct {
	points map[string]*point
	// kill is what happens when a point fires; SIGKILL of this process
	// unless a test replaces it.
	kill func(name string)
}

type point struct {
	at   int64
	hits atomic.Int64
}

// Parse reads a specification like "publish.after-ack=3". An empty spec
// returns nil (nothing armed).
func Parse(spec string) (*Set, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	s := &Set{points: map[string]*point{}, kill: killSelf}
	for _, item := range strings.Split(spec, ",") {
		name, n, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || !known(name) {
			return nil, fmt.Errorf("INGESTD_FAILPOINTS: %q is not name=N with a known name (%s, %s, %s)", item, AfterCommit, AfterAck, BeforeWrite)
		}
		at, err := strconv.ParseInt(n, 10, 64)
		if err != nil || at < 1 {
			return nil, fmt.Errorf("INGESTD_FAILPOINTS: %q: N must be a positive integer", item)
		}
		s.points[name] = &point{at: at}
	}
	return s, nil
}

// WithAction replaces the kill action, for tests of this package.
func (s *Set) WithAction(f func(name string)) *Set {
	s.kill = f
	return s
}

// Hit marks that the named point was reached, and fires it if this is the
// armed occurrence.
func (s *Set) Hit(name string) {
	if s == nil {
		return
	}
	p, ok := s.points[name]
	if !ok {
		return
	}
	if p.hits.Add(1) == p.at {
		s.kill(name)
	}
}

func killSelf(string) {
	_ = syscall.Kill(syscall.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL cannot be caught; never continue past the point
}
