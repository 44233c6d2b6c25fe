package outbox

// Statements a test runs by hand, to stand in for a client that froze.
const (
	AllocSQL      = allocSQL
	CopyOutboxSQL = copyOutboxSQL
)
