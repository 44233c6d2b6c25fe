package yandex

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/ingestd/ingestd/internal/event"
)

// The journal is read at up to 100k+ entries per second, so a page is not
// decoded with reflection-based encoding/json, which, to keep each entry's
// raw bytes, scans every entry four times and allocates a copy of it (see
// BenchmarkJournalDecode). Instead a small parser walks the body once: it
// checks the JSON syntax as strictly as encoding/json does, picks out the
// known fields and slices each entry's raw bytes out of the body without
// copying. FuzzDecodePage holds it to encoding/json's behaviour.
//
// The parser follows encoding/json's rules for the values it accepts (null
// leaves a field empty, the last of duplicate keys wins, integers must fit
// int64 and have no fraction or exponent, strings are unescaped exactly like
// encoding/json does, nesting is limited to the same depth) with two
// deliberate differences: object keys match exactly, not case-insensitively,
// and every occurrence of a duplicated key must be well-typed.

// maxDepth is encoding/json's nesting limit. Without one, a hostile body of
// 32 MiB of '[' would recurse deep enough to exhaust the stack.
const maxDepth = 10000

// decodePage parses a journal response body. hint is the expected number of
// entries (the page limit), used to size the entry slice once. Errors
// describe what is malformed; the caller classifies them.
func decodePage(body []byte, hint int) (*Page, error) {
	p := parser{b: body, strs: new(event.Arena)}
	p.ws()
	if c := p.peek(); c != '{' {
		// Name the kind of value only when the body is JSON at all.
		if err := p.skip(); err != nil {
			return nil, err
		}
		if err := p.end(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("body is a JSON %s, not an object", kindOf(c))
	}
	if err := p.open('{'); err != nil {
		return nil, err
	}

	var (
		cursor     string
		entries    []Entry
		haveEvents bool
	)
	for first := true; ; first = false {
		key, ok, err := p.nextMember(first)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		switch string(key) {
		case "cursor":
			cursor, err = p.cursorValue()
		case "events":
			entries, haveEvents, err = p.events(hint)
		default:
			err = p.skip()
		}
		if err != nil {
			return nil, err
		}
	}
	if err := p.end(); err != nil {
		return nil, err
	}

	switch {
	case cursor == "":
		return nil, errors.New("no cursor (missing, null or empty)")
	case !haveEvents:
		return nil, errors.New("no events array (missing or null)")
	}
	return &Page{Cursor: cursor, Entries: entries, Bytes: len(body), strs: p.strs}, nil
}

// parser is a single-pass JSON reader specialised for the journal. It checks
// bounds and syntax everywhere, so that any input yields a page or an error,
// never a panic.
type parser struct {
	b     []byte
	i     int
	depth int
	// points backs the CurrentPointID pointers of a page in chunks, so that a
	// page costs a few allocations for them rather than one per entry.
	points []int64
	// strs holds the page's strings: claim ids and change times, the
	// interned values of fields with few distinct values (change type,
	// status, currency, resolution, client), and later the strings the
	// page's events and messages are built with.
	strs *event.Arena
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

// end checks that nothing but white space follows the top-level value.
func (p *parser) end() error {
	p.ws()
	if p.i != len(p.b) {
		return p.syntaxError("the end of the body")
	}
	return nil
}

// open consumes c, '{' or '[', entering one more level of nesting.
func (p *parser) open(c byte) error {
	if p.peek() != c {
		return p.syntaxError(fmt.Sprintf("'%c'", c))
	}
	p.i++
	p.depth++
	if p.depth > maxDepth {
		return fmt.Errorf("invalid JSON at offset %d: nested deeper than %d levels", p.i, maxDepth)
	}
	return nil
}

// nextMember is called after an object's '{' or after a member's value. It
// consumes the separator and the key with its colon and returns the
// unescaped key, or ok == false after consuming the closing '}'.
func (p *parser) nextMember(first bool) (key []byte, ok bool, err error) {
	p.ws()
	if p.peek() == '}' {
		p.i++
		p.depth--
		return nil, false, nil
	}
	if !first {
		if p.peek() != ',' {
			return nil, false, p.syntaxError("',' or '}'")
		}
		p.i++
		p.ws()
	}
	tok, escaped, _, err := p.stringToken()
	if err != nil {
		return nil, false, err
	}
	key = tok[1 : len(tok)-1]
	if escaped {
		var s string
		if err := json.Unmarshal(tok, &s); err != nil {
			return nil, false, fmt.Errorf("object key: %w", err)
		}
		key = []byte(s)
	}
	p.ws()
	if p.peek() != ':' {
		return nil, false, p.syntaxError("':'")
	}
	p.i++
	p.ws()
	return key, true, nil
}

// nextElement is called after an array's '[' or after an element. It
// consumes the separator before the next element and reports true, or
// consumes the closing ']' and reports false. A ']' right after a ','
// is left for the element reader to reject, as JSON requires.
func (p *parser) nextElement(first bool) (more bool, err error) {
	p.ws()
	if p.peek() == ']' {
		p.i++
		p.depth--
		return false, nil
	}
	if !first {
		if p.peek() != ',' {
			return false, p.syntaxError("',' or ']'")
		}
		p.i++
		p.ws()
	}
	return true, nil
}

// stringToken consumes a JSON string and returns it with its quotes,
// whether it contains escapes and whether it contains non-ASCII bytes. Like
// encoding/json it rejects control characters and malformed escapes but
// accepts invalid UTF-8, which decoding replaces.
func (p *parser) stringToken() (tok []byte, escaped, nonASCII bool, err error) {
	if p.peek() != '"' {
		return nil, false, false, p.syntaxError("a string")
	}
	start := p.i
	for j := p.i + 1; j < len(p.b); j++ {
		// Most bytes are printable ASCII other than a quote or backslash:
		// skip runs of them with one comparison each before the full check.
		for j < len(p.b) && plainStringByte(p.b[j]) {
			j++
		}
		if j >= len(p.b) {
			break
		}
		switch c := p.b[j]; {
		case c == '"':
			p.i = j + 1
			return p.b[start:p.i], escaped, nonASCII, nil
		case c == '\\':
			escaped = true
			j++
			if j >= len(p.b) {
				break
			}
			switch p.b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(p.b) || !isHex(p.b[j+1]) || !isHex(p.b[j+2]) || !isHex(p.b[j+3]) || !isHex(p.b[j+4]) {
					p.i = j
					return nil, false, false, p.syntaxError("four hex digits after \\u")
				}
				j += 4
			default:
				p.i = j
				return nil, false, false, p.syntaxError("an escape character")
			}
		case c < ' ':
			p.i = j
			return nil, false, false, p.syntaxError("no control character in a string")
		case c >= utf8.RuneSelf:
			nonASCII = true
		}
	}
	p.i = len(p.b)
	return nil, false, false, p.syntaxError("the end of a string")
}

// plainStringByte reports whether c stands for itself inside a JSON string
// and needs no further check: printable ASCII but the quote and backslash.
// One subtraction folds the range check into a single comparison.
func plainStringByte(c byte) bool {
	return c-0x20 < 0x7f-0x20 && c != '"' && c != '\\'
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// number consumes a JSON number, checking its grammar, and returns its text.
func (p *parser) number() ([]byte, error) {
	start := p.i
	if p.peek() == '-' {
		p.i++
	}
	switch c := p.peek(); {
	case c == '0':
		p.i++
	case c >= '1' && c <= '9':
		p.digits()
	default:
		return nil, p.syntaxError("a digit")
	}
	if p.peek() == '.' {
		p.i++
		if p.digits() == 0 {
			return nil, p.syntaxError("a digit after the decimal point")
		}
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.i++
		if c := p.peek(); c == '+' || c == '-' {
			p.i++
		}
		if p.digits() == 0 {
			return nil, p.syntaxError("a digit in the exponent")
		}
	}
	return p.b[start:p.i], nil
}

// digits consumes a run of decimal digits and returns its length.
func (p *parser) digits() int {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	return p.i - start
}

// stringValue reads a string or null (returned as ""). Strings without
// escapes and with valid UTF-8 are converted directly; the rest go through
// encoding/json so that escapes and invalid UTF-8 turn out exactly as they
// would with it.
func (p *parser) stringValue() (string, error) { return p.stringValueOf(false) }

// internedValue is stringValue for a field with few distinct values.
func (p *parser) internedValue() (string, error) { return p.stringValueOf(true) }

func (p *parser) stringValueOf(intern bool) (string, error) {
	if p.literal("null") {
		return "", nil
	}
	if p.peek() != '"' {
		return "", fmt.Errorf("is a JSON %s, not a string", kindOf(p.peek()))
	}
	tok, escaped, nonASCII, err := p.stringToken()
	if err != nil {
		return "", err
	}
	content := tok[1 : len(tok)-1]
	if !escaped && (!nonASCII || utf8.Valid(content)) {
		if intern {
			return p.strs.Intern(content), nil
		}
		return p.strs.String(content), nil
	}
	var s string
	if err := json.Unmarshal(tok, &s); err != nil {
		return "", err
	}
	return s, nil
}

// decimalValue reads a string, null or a JSON number. The API documents
// prices as strings; a number is kept as its literal text rather than
// rejected, so that a provider-side type change neither stops the journal
// nor loses precision through a float.
func (p *parser) decimalValue() (string, error) {
	if c := p.peek(); c == '-' || (c >= '0' && c <= '9') {
		tok, err := p.number()
		if err != nil {
			return "", err
		}
		return p.strs.String(tok), nil
	}
	return p.stringValue()
}

// cursorValue reads the page cursor. Unlike other strings it must survive
// the round trip to PostgreSQL and back to the server unchanged, so invalid
// UTF-8 and unpaired surrogate escapes, which decoding would silently
// replace with U+FFFD, are rejected instead.
func (p *parser) cursorValue() (string, error) {
	if p.literal("null") {
		return "", nil
	}
	if p.peek() != '"' {
		return "", fmt.Errorf("cursor is a JSON %s, not a string", kindOf(p.peek()))
	}
	start := p.i
	s, err := p.stringValue()
	if err != nil {
		return "", fmt.Errorf("cursor: %w", err)
	}
	content := p.b[start+1 : p.i-1]
	if !utf8.Valid(content) {
		return "", errors.New("cursor is not valid UTF-8")
	}
	if strings.ContainsRune(s, utf8.RuneError) && !bytes.Contains(content, []byte("\uFFFD")) &&
		!bytes.Contains(bytes.ToLower(content), []byte(`\ufffd`)) {
		return "", errors.New("cursor contains an unpaired surrogate escape")
	}
	return s, nil
}

// intValue reads an integer that fits int64, or null.
func (p *parser) intValue() (v int64, null bool, err error) {
	if p.literal("null") {
		return 0, true, nil
	}
	c := p.peek()
	if c != '-' && (c < '0' || c > '9') {
		return 0, false, fmt.Errorf("is a JSON %s, not an integer", kindOf(c))
	}
	tok, err := p.number()
	if err != nil {
		return 0, false, err
	}
	digits := tok
	neg := digits[0] == '-'
	if neg {
		digits = digits[1:]
	}
	// limit is the magnitude bound: 1<<63 for negative values, which int64
	// can hold, and 1<<63-1 for positive ones.
	limit := uint64(1<<63 - 1)
	if neg {
		limit++
	}
	var u uint64
	for _, d := range digits {
		if d < '0' || d > '9' {
			return 0, false, fmt.Errorf("%q is not an integer", tok)
		}
		if u > (limit-uint64(d-'0'))/10 {
			return 0, false, fmt.Errorf("%s overflows int64", tok)
		}
		u = u*10 + uint64(d-'0')
	}
	if neg {
		return int64(-u), false, nil // -u wraps to the right value for 1<<63.
	}
	return int64(u), false, nil
}

// literal consumes lit if the input continues with it.
func (p *parser) literal(lit string) bool {
	if bytes.HasPrefix(p.b[p.i:], []byte(lit)) {
		p.i += len(lit)
		return true
	}
	return false
}

// skip consumes one value of any kind, checking its syntax.
func (p *parser) skip() error {
	switch c := p.peek(); {
	case c == '"':
		_, _, _, err := p.stringToken()
		return err
	case c == '{':
		if err := p.open('{'); err != nil {
			return err
		}
		for first := true; ; first = false {
			_, ok, err := p.nextMember(first)
			if err != nil || !ok {
				return err
			}
			if err := p.skip(); err != nil {
				return err
			}
		}
	case c == '[':
		if err := p.open('['); err != nil {
			return err
		}
		for first := true; ; first = false {
			if ok, err := p.nextElement(first); err != nil || !ok {
				return err
			}
			if err := p.skip(); err != nil {
				return err
			}
		}
	case c == 't':
		return p.keyword("true")
	case c == 'f':
		return p.keyword("false")
	case c == 'n':
		return p.keyword("null")
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := p.number()
		return err
	default:
		return p.syntaxError("a value")
	}
}

// keyword consumes the literal lit or fails.
func (p *parser) keyword(lit string) error {
	if !p.literal(lit) {
		return p.syntaxError(lit)
	}
	return nil
}

// events reads the events array. A null array counts as missing.
func (p *parser) events(hint int) (entries []Entry, ok bool, err error) {
	if p.literal("null") {
		return nil, false, nil
	}
	if p.peek() != '[' {
		return nil, false, fmt.Errorf("events is a JSON %s, not an array", kindOf(p.peek()))
	}
	if err := p.open('['); err != nil {
		return nil, false, err
	}
	// Sizing by the page limit alone would allocate a full page for every
	// empty poll; no entry is shorter than minEntryBytes.
	entries = make([]Entry, 0, min(hint, len(p.b)/minEntryBytes+1))
	for first := true; ; first = false {
		more, err := p.nextElement(first)
		if err != nil {
			return nil, false, err
		}
		if !more {
			return entries, true, nil
		}
		entries = append(entries, Entry{})
		if err := p.entry(&entries[len(entries)-1]); err != nil {
			return nil, false, fmt.Errorf("events[%d]: %w", len(entries)-1, err)
		}
	}
}

// minEntryBytes is the length of the shortest acceptable entry,
// {"claim_id":"c","operation_id":0}.
const minEntryBytes = 33

// pointChunk is how many point ids share one backing allocation.
const pointChunk = 256

// entry reads one journal entry into e and checks that it identifies a
// change: without claim_id and operation_id it cannot be keyed or
// deduplicated, so the page is rejected rather than the entry dropped.
func (p *parser) entry(e *Entry) error {
	if p.peek() != '{' {
		return fmt.Errorf("is a JSON %s, not an object", kindOf(p.peek()))
	}
	start := p.i
	if err := p.open('{'); err != nil {
		return err
	}
	hasOp := false
	for first := true; ; first = false {
		key, ok, err := p.nextMember(first)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		switch string(key) {
		case "operation_id":
			var null bool
			e.OperationID, null, err = p.intValue()
			hasOp = !null
		case "claim_id":
			e.ClaimID, err = p.stringValue()
		case "change_type":
			e.ChangeType, err = p.internedValue()
		case "updated_ts":
			e.UpdatedTS, err = p.stringValue()
		case "new_status":
			e.NewStatus, err = p.internedValue()
		case "new_price":
			e.NewPrice, err = p.decimalValue()
		case "new_currency":
			e.NewCurrency, err = p.internedValue()
		case "resolution":
			e.Resolution, err = p.internedValue()
		case "revision":
			e.Revision, _, err = p.intValue()
		case "client_id":
			e.ClientID, err = p.internedValue()
		case "current_point_id":
			var (
				v    int64
				null bool
			)
			v, null, err = p.intValue()
			e.CurrentPointID = nil
			if err == nil && !null {
				if len(p.points) == cap(p.points) {
					p.points = make([]int64, 0, pointChunk)
				}
				p.points = append(p.points, v)
				e.CurrentPointID = &p.points[len(p.points)-1]
			}
		default:
			err = p.skip()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	e.Raw = p.b[start:p.i:p.i]
	e.rawChecked = true

	switch {
	case e.ClaimID == "":
		return errors.New("lacks claim_id")
	case !hasOp:
		return fmt.Errorf("claim %s lacks operation_id", e.ClaimID)
	}
	return nil
}

// syntaxError reports what was expected at the current offset.
func (p *parser) syntaxError(want string) error {
	if p.i >= len(p.b) {
		return fmt.Errorf("invalid JSON: body ends at offset %d, expected %s", len(p.b), want)
	}
	return fmt.Errorf("invalid JSON at offset %d: expected %s, got %q", p.i, want, p.b[p.i])
}

// kindOf names the JSON kind of a value starting with c, for messages.
func kindOf(c byte) string {
	switch {
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == '"':
		return "string"
	case c == 't' || c == 'f':
		return "boolean"
	case c == 'n':
		return "null"
	case c == '-' || (c >= '0' && c <= '9'):
		return "number"
	case c == 0:
		return "nothing"
	default:
		return "value"
	}
}
