package publish

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/outbox"
)

// TestCommitsAreQueuedOnlyDuringTheTerm: an instance that does not run the
// publisher queues no commits, since another instance publishes them from
// the outbox; queued, they would only pin their pages' memory (the
// many-accounts benchmark saw 100 to 200 MiB on such instances).
func TestCommitsAreQueuedOnlyDuringTheTerm(t *testing.T) {
	t.Parallel()
	p := &Publisher{cfg: Config{BatchSize: 100}, wake: make(chan struct{}, 1)}
	commit := func(first int64, n int) outbox.Appended {
		return outbox.Appended{FirstSeq: first, LastSeq: first + int64(n) - 1, Inserted: make([]outbox.Row, n)}
	}
	queued := func() int {
		p.mem.mu.Lock()
		defer p.mem.mu.Unlock()
		return p.mem.rows
	}
	p.Committed(commit(1, 10))
	require.Zero(t, queued(), "not the publisher: nothing queued")
	require.Len(t, p.wake, 1, "the wake-up still goes out")

	p.memReset(true)
	p.Committed(commit(11, 10))
	p.Committed(commit(21, 5))
	require.Equal(t, 15, queued(), "during its term the publisher queues its process's commits")

	p.memReset(false)
	require.Zero(t, queued(), "the term's end frees the queue")
	p.Committed(commit(26, 10))
	require.Zero(t, queued())
}
