package sim

import (
	"encoding/base64"
	"encoding/binary"
	"strings"
)

// Cursor layout. The binary form is 22 bytes, so its standard base64
// encoding always ends in "==", and it opens with magic bytes that encode to
// "+/+/": every cursor therefore contains '+', '/' and '=', which get mangled
// by clients that put it in a URL, trim it, or re-encode it. The prefix adds
// '~' and '.', which JSON does not escape but some sanitizers touch.
const (
	cursorPrefix  = "~yd.j2."
	cursorVersion = 2
	cursorBinLen  = 22
	cursorTextLen = len(cursorPrefix) + (cursorBinLen+2)/3*4
	maxOffset     = 1<<48 - 1 // the offset is stored in 6 bytes
)

// encodeCursor returns the cursor pointing after the first off entries.
func (y *Yandex) encodeCursor(off int) string {
	var b [cursorBinLen]byte
	b[0], b[1], b[2] = 0xFB, 0xFF, 0xBF
	b[3] = cursorVersion
	binary.BigEndian.PutUint64(b[4:12], y.journalID)
	// Masking the offset with a keyed value keeps consecutive cursors from
	// looking like a counter a client could be tempted to compute.
	v := uint64(off) ^ y.cursorKey>>16
	for k := range 6 {
		b[17-k] = byte(v >> (8 * k))
	}
	binary.BigEndian.PutUint32(b[18:22], y.cursorSum(b[:18]))
	return cursorPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// cursorSum is a keyed FNV-1a checksum. Keying it with a seed-derived value
// means a client cannot fabricate a cursor by editing the offset, and a
// cursor from a differently seeded journal is rejected even if its journal
// id were patched.
func (y *Yandex) cursorSum(payload []byte) uint32 {
	h := uint32(2166136261)
	for k := range 8 {
		h ^= uint32(byte(y.cursorKey >> (8 * k)))
		h *= 16777619
	}
	for _, c := range payload {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}

// decodeCursor returns the offset a cursor points to, accepting it only if it
// is byte for byte a cursor this journal could have issued and points no
// further than the entries available.
func (y *Yandex) decodeCursor(s string, available int) (int, bool) {
	if len(s) != cursorTextLen {
		return 0, false
	}
	rest, ok := strings.CutPrefix(s, cursorPrefix)
	if !ok {
		return 0, false
	}
	b, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil || len(b) != cursorBinLen {
		return 0, false
	}
	if b[0] != 0xFB || b[1] != 0xFF || b[2] != 0xBF || b[3] != cursorVersion {
		return 0, false
	}
	if binary.BigEndian.Uint64(b[4:12]) != y.journalID {
		return 0, false
	}
	if binary.BigEndian.Uint32(b[18:22]) != y.cursorSum(b[:18]) {
		return 0, false
	}
	var v uint64
	for _, c := range b[12:18] {
		v = v<<8 | uint64(c)
	}
	v ^= y.cursorKey >> 16
	if v > uint64(available) {
		return 0, false
	}
	// The decoder tolerates line breaks inside base64, so insist on the
	// canonical spelling: the client must send exactly what it was given.
	if y.encodeCursor(int(v)) != s {
		return 0, false
	}
	return int(v), true
}

// appendCursorJSON appends the cursor as JSON string content, escaping '/'
// as "\/" (legal JSON, and what PHP-style encoders emit). A client that copies
// the raw JSON token instead of decoding it stores the wrong cursor.
func appendCursorJSON(dst []byte, cursor string) []byte {
	for k := 0; k < len(cursor); k++ {
		if cursor[k] == '/' {
			dst = append(dst, '\\', '/')
			continue
		}
		dst = append(dst, cursor[k])
	}
	return dst
}
