// Package cursor keeps each source's position: the opaque cursor of a
// journal source with the history of every value it had, and the halt
// record of any source stopped on an error that needs an operator.
//
// CommitPage is where a journal page is committed: one transaction checks
// the source's lease (internal/lease), appends the page's events to the
// outbox (internal/outbox) and moves the cursor, so a restart, or kill -9,
// resumes exactly where it stopped and no entry is stored twice.
package cursor
