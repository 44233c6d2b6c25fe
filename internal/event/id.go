package event

import (
	"crypto/sha1"

	"github.com/google/uuid"
)

// IDNamespace is the UUID namespace of ingestd event IDs. It was generated
// once at random and must never change: changing it would give every
// upstream change a new event ID and defeat consumers' deduplication.
const IDNamespace = "2e1b8706-4ef0-4b05-acfe-b049fc897085"

// idNamespace returns IDNamespace as a uuid.UUID. It is a literal rather than
// a parsed package variable so that the package keeps no mutable globals and
// ID does not parse a string on every call; a test checks that both agree.
func idNamespace() uuid.UUID {
	return uuid.UUID{
		0x2e, 0x1b, 0x87, 0x06, 0x4e, 0xf0, 0x4b, 0x05,
		0xac, 0xfe, 0xb0, 0x49, 0xfc, 0x89, 0x70, 0x85,
	}
}

// ID returns the deterministic event ID of one upstream change: a name-based
// (version 5, SHA-1) UUID in IDNamespace over provider, account and parts,
// joined with a 0x00 byte. The same inputs always give the same ID, so a
// change read twice (after a restart, or by a second instance) gets the same
// ce_id and consumers can deduplicate on it.
//
// The separator keeps ("a", "bc") and ("ab", "c") apart; it relies on
// upstream identifiers never containing a NUL byte, which neither provider
// emits.
//
// Each provider passes the fields that identify a change:
//   - Yandex: claim_id, operation_id, change_type, revision (one journal
//     entry);
//   - BTS: orderId, status code, change count (the number of status changes
//     ingestd has seen for the order, so that a status that comes back
//     later is a new event).
func ID(provider, account string, parts ...string) string {
	return UUID(provider, account, parts...).String()
}

// UUID is ID as a uuid.UUID, for callers that format it themselves (into
// an Arena) or need its bytes.
func UUID(provider, account string, parts ...string) uuid.UUID {
	// The namespace and the name are hashed as one buffer, on the stack for
	// names of ordinary length: this is what uuid.NewSHA1 computes, without
	// its three allocations, for every event of every page.
	ns := idNamespace()
	var stack [256]byte
	buf := append(stack[:0], ns[:]...)
	buf = append(buf, provider...)
	buf = append(buf, 0)
	buf = append(buf, account...)
	for _, p := range parts {
		buf = append(buf, 0)
		buf = append(buf, p...)
	}
	sum := sha1.Sum(buf)
	var id uuid.UUID
	copy(id[:], sum[:])
	id[6] = (id[6] & 0x0f) | 0x50 // version 5
	id[8] = (id[8] & 0x3f) | 0x80 // RFC 4122 variant
	return id
}
