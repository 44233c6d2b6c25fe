package sim

import (
	"math"
	"sync"
	"time"
)

// segment is a stretch of time with a constant append rate. SetRate starts a
// new segment, so the appearance time of every entry stays computable.
type segment struct {
	start time.Time
	base  int // entries available when the segment started
	rate  float64
}

// schedule decides how many entries are available at a given moment. Time
// comes from the configured clock only, so tests drive it without sleeping.
type schedule struct {
	mu      sync.Mutex
	now     func() time.Time
	start   time.Time
	backlog int
	total   int // -1 when unlimited
	segs    []segment
	// high is the most entries ever reported available. An injected clock
	// may go backwards; entries must not vanish when it does, or cursors
	// already handed out would turn invalid.
	high int
}

func newSchedule(now func() time.Time, backlog, total int, rate float64) *schedule {
	start := now()
	return &schedule{
		now:     now,
		start:   start,
		backlog: backlog,
		total:   total,
		segs:    []segment{{start: start, base: backlog, rate: rate}},
		high:    backlog,
	}
}

// available returns the number of entries available now.
func (s *schedule) available() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.availableLocked(s.now())
}

func (s *schedule) availableLocked(t time.Time) int {
	seg := &s.segs[len(s.segs)-1]
	n := seg.base + seg.appendedBy(t)
	if s.total >= 0 && n > s.total {
		n = s.total
	}
	s.high = max(s.high, n)
	return s.high
}

// setRate switches to a new append rate from now on.
func (s *schedule) setRate(rate float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.now()
	n := s.availableLocked(t)
	s.segs = append(s.segs, segment{start: t, base: n, rate: rate})
}

// appearedAt returns when entry i became (or, under the current rate, will
// become) available, or the zero time if it never will.
func (s *schedule) appearedAt(i int) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total >= 0 && i >= s.total {
		return time.Time{}
	}
	if i < s.backlog {
		return s.start
	}
	// Entry i appeared during the last segment that began before it.
	k := len(s.segs) - 1
	for k > 0 && s.segs[k].base > i {
		k--
	}
	seg := &s.segs[k]
	if seg.rate <= 0 {
		return time.Time{}
	}
	return seg.start.Add(seg.due(i - seg.base + 1))
}

// maxDue caps appearance delays far beyond any test's horizon, keeping the
// arithmetic clear of overflow for tiny rates.
const maxDue = time.Duration(math.MaxInt64 / 2)

// due returns how long after the segment start its k-th entry appears.
func (seg *segment) due(k int) time.Duration {
	d := math.Ceil(float64(k) * 1e9 / seg.rate)
	if d >= float64(maxDue) {
		return maxDue
	}
	return time.Duration(d)
}

// appendedBy returns how many entries the segment has appended by time t.
// The float estimate is corrected against due so that it agrees exactly with
// the appearance times reported by appearedAt.
func (seg *segment) appendedBy(t time.Time) int {
	if seg.rate <= 0 || t.Before(seg.start) {
		return 0
	}
	el := t.Sub(seg.start)
	k := int(float64(el) * seg.rate / 1e9)
	for k > 0 && seg.due(k) > el {
		k--
	}
	for {
		d := seg.due(k + 1)
		if d > el || d == maxDue {
			return k
		}
		k++
	}
}
