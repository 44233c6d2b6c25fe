package event

import (
	"encoding/hex"
	"strings"
)

// arenaBlock is the size of an Arena's blocks. A journal page of 1,000
// events needs about 150 KB of strings (claim id, change time, event id,
// key and source of each), so a page takes three blocks.
const arenaBlock = 64 << 10

// Arena hands out strings that share blocks of memory, so that the many
// small strings of a page of events cost a few allocations per page rather
// than several per event. A string from an Arena keeps its whole block
// alive, so an Arena suits strings that live and die together, as a page's
// do. The zero Arena is ready to use. A nil *Arena allocates each string on
// its own, so code can take an optional Arena. An Arena is not safe for
// concurrent use; the strings it returns are ordinary immutable strings.
type Arena struct {
	// b is the current block. A strings.Builder never changes bytes it has
	// written, so String()[start:] of a finished write stays valid while
	// later writes append after it; a full block is replaced, not grown, so
	// that no block is copied.
	b strings.Builder
	// interned maps the values given to Intern to their string, up to
	// maxInterned of them.
	interned map[string]string
}

// maxInterned bounds the distinct values an Arena interns, so that a field
// thought to have few values but holding many costs a string each, not an
// ever-growing map.
const maxInterned = 256

// reserve makes room for n more bytes in the current block.
func (a *Arena) reserve(n int) {
	if a.b.Cap()-a.b.Len() < n {
		a.b = strings.Builder{}
		a.b.Grow(max(n, arenaBlock))
	}
}

// tail returns the bytes written since start as a string.
func (a *Arena) tail(start int) string { return a.b.String()[start:] }

// String returns b as a string.
func (a *Arena) String(b []byte) string {
	if a == nil {
		return string(b)
	}
	a.reserve(len(b))
	start := a.b.Len()
	a.b.Write(b)
	return a.tail(start)
}

// Intern is String for a value likely to repeat (a status, a source): the
// first occurrence of each of up to maxInterned values is stored, and later
// ones return that same string without copying.
func (a *Arena) Intern(b []byte) string {
	if a == nil {
		return string(b)
	}
	if s, ok := a.interned[string(b)]; ok {
		return s
	}
	s := a.String(b)
	if len(a.interned) < maxInterned {
		if a.interned == nil {
			a.interned = make(map[string]string)
		}
		a.interned[s] = s
	}
	return s
}

// Concat returns the concatenation of parts.
func (a *Arena) Concat(parts ...string) string {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if a == nil {
		var b strings.Builder
		b.Grow(n)
		for _, p := range parts {
			b.WriteString(p)
		}
		return b.String()
	}
	a.reserve(n)
	start := a.b.Len()
	for _, p := range parts {
		a.b.WriteString(p)
	}
	return a.tail(start)
}

// UUID returns u in its canonical text form,
// xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.
func (a *Arena) UUID(u [16]byte) string {
	var buf [36]byte
	hex.Encode(buf[0:8], u[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], u[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], u[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], u[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:], u[10:])
	return a.String(buf[:])
}
