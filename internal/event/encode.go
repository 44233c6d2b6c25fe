package event

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// CloudEvents 1.0 Kafka protocol binding, binary content mode: each context
// attribute travels as a "ce_"-prefixed record header and the data content
// type as "content-type"; the record value is the JSON payload.
const (
	HeaderSpecVersion = "ce_specversion"
	HeaderID          = "ce_id"
	HeaderSource      = "ce_source"
	HeaderType        = "ce_type"
	HeaderTime        = "ce_time"
	HeaderSubject     = "ce_subject"
	HeaderContentType = "content-type"

	// SpecVersion is the CloudEvents specification version ingestd follows.
	SpecVersion = "1.0"
	// ContentType is the media type of every payload.
	ContentType = "application/json"
)

// payloadOverhead bounds the bytes of a v1 payload that do not come from the
// event's strings or Raw: the 284 bytes of field names and punctuation, two
// 30-byte timestamps, two 20-digit integers, and null instead of "" for the
// nullable fields. It lets AppendJSON size its buffer once, so that encoding
// costs a single allocation unless a string needs escaping.
const payloadOverhead = 400

// ValidationError says which payload field of an Event breaks schema v1, and
// how. Callers can tell it apart from other errors with errors.As.
type ValidationError struct {
	// Field is the JSON field name in the payload, e.g. "order_id".
	Field string
	// Problem completes the sentence "<field> ...", e.g. "is empty".
	Problem string
}

// Error returns a message such as "event: order_id is empty".
func (e *ValidationError) Error() string {
	return "event: " + e.Field + " " + e.Problem
}

// invalid builds the *ValidationError for field; it returns error so that
// callers can return it directly.
func invalid(field, problem string) error {
	return &ValidationError{Field: field, Problem: problem}
}

// Key returns the Kafka record key, "<provider>:<order id>". Every event of
// one shipment has the same key, so a key-hashing partitioner keeps them in
// one partition, in the order ingestd publishes them.
func (e *Event) Key() string { return e.keyIn(nil) }

func (e *Event) keyIn(a *Arena) string { return a.Concat(e.Provider, ":", e.OrderID) }

// SourceURI returns the CloudEvents source of the events read from one
// provider account: "/ingestd/<provider>/<account>". Together with ce_id it
// identifies an event uniquely, as CloudEvents requires.
func SourceURI(provider, account string) string { return sourceURIIn(nil, provider, account) }

func sourceURIIn(a *Arena, provider, account string) string {
	return a.Concat("/ingestd/", provider, "/", account)
}

// Source returns the CloudEvents source of e; see SourceURI.
func (e *Event) Source() string { return sourceURIIn(nil, e.Provider, e.Account) }

// Validate reports whether e can be encoded as a payload that satisfies
// schemas/delivery-event.v1.json. It returns a *ValidationError for the first
// problem found.
func (e *Event) Validate() error {
	_, err := e.validate()
	return err
}

// validate is Validate that also returns Raw as it will be encoded (trimmed,
// nil when absent), so that MarshalJSON and Message scan Raw only once.
func (e *Event) validate() ([]byte, error) {
	switch {
	case e.ID == "":
		return nil, invalid("event_id", "is empty")
	case !isUUID(e.ID):
		return nil, invalid("event_id", fmt.Sprintf("%q is not a UUID in canonical form", e.ID))
	case e.Type == "":
		return nil, invalid("event_type", "is empty")
	case e.Type != TypeStatusChanged && e.Type != TypePriceChanged:
		return nil, invalid("event_type", fmt.Sprintf("%q is not a v1 event type", e.Type))
	case e.Provider == "":
		return nil, invalid("provider", "is empty")
	case e.Provider != ProviderYandex && e.Provider != ProviderBTS:
		return nil, invalid("provider", fmt.Sprintf("%q is not a known provider", e.Provider))
	case e.OrderID == "":
		return nil, invalid("order_id", "is empty")
	case e.Status != "" && !e.Status.Valid():
		return nil, invalid("status", fmt.Sprintf("%q is not a canonical status", e.Status))
	}
	if err := validateTime("occurred_at", e.OccurredAt); err != nil {
		return nil, err
	}
	if err := validateTime("observed_at", e.ObservedAt); err != nil {
		return nil, err
	}
	if p := e.Price; p != nil {
		if !isDecimal(p.Amount) {
			return nil, invalid("price.amount", fmt.Sprintf("%q is not a decimal number", p.Amount))
		}
		if !isCurrency(p.Currency) {
			return nil, invalid("price.currency", fmt.Sprintf("%q is not a 3-letter currency code", p.Currency))
		}
	}
	if len(e.Raw) == 0 {
		return nil, nil
	}
	if e.RawChecked && e.Raw[0] == '{' && e.Raw[len(e.Raw)-1] == '}' {
		return e.Raw, nil
	}
	raw, ok := rawObject(e.Raw)
	if !ok {
		return nil, invalid("raw", "is not a JSON object")
	}
	return raw, nil
}

// validateTime rejects the zero time, which would mean the change's time was
// never set, and years RFC 3339 cannot represent.
func validateTime(field string, t time.Time) error {
	if t.IsZero() {
		return invalid(field, "is zero")
	}
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return invalid(field, fmt.Sprintf("year %d is outside 0000-9999", y))
	}
	return nil
}

// isUUID accepts only the 36-character hyphenated form that ID produces,
// because that is the form the schema's "uuid" format requires; uuid.Parse
// alone would also accept URN and braced forms.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	_, err := uuid.Parse(s)
	return err == nil
}

// isDecimal matches ^-?[0-9]+(\.[0-9]+)?$, the schema's pattern for amounts.
// It is hand-written to keep regexp (and a package-level compiled pattern)
// off the hot path.
func isDecimal(s string) bool {
	if len(s) > 0 && s[0] == '-' {
		s = s[1:]
	}
	digits := func(s string) int {
		n := 0
		for n < len(s) && s[n] >= '0' && s[n] <= '9' {
			n++
		}
		return n
	}
	n := digits(s)
	if n == 0 {
		return false
	}
	s = s[n:]
	if s == "" {
		return true
	}
	if s[0] != '.' {
		return false
	}
	s = s[1:]
	n = digits(s)
	return n > 0 && n == len(s)
}

// isCurrency matches ^[A-Z]{3}$, the shape of an ISO 4217 code.
func isCurrency(s string) bool {
	return len(s) == 3 &&
		s[0] >= 'A' && s[0] <= 'Z' &&
		s[1] >= 'A' && s[1] <= 'Z' &&
		s[2] >= 'A' && s[2] <= 'Z'
}

// rawObject returns raw without surrounding JSON whitespace, and whether it
// is a single valid JSON object. The whitespace is trimmed so that a decoder
// gives back exactly the bytes that were encoded.
func rawObject(raw []byte) ([]byte, bool) {
	for len(raw) > 0 && isJSONSpace(raw[0]) {
		raw = raw[1:]
	}
	for len(raw) > 0 && isJSONSpace(raw[len(raw)-1]) {
		raw = raw[:len(raw)-1]
	}
	if len(raw) == 0 || raw[0] != '{' || !validJSON(raw) {
		return nil, false
	}
	return raw, true
}

func isJSONSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// maxJSONDepth is encoding/json's nesting limit, so that validJSON accepts
// exactly what json.Valid accepts.
const maxJSONDepth = 10000

// validJSON reports whether b is exactly one JSON value, with the same answer
// as json.Valid (a fuzz test holds them together). It exists because
// json.Valid's byte-at-a-time state machine took three quarters of the
// encoding time of a typical event; this direct recursive-descent check is
// about three times faster on a Yandex journal entry. Like json.Valid it accepts invalid UTF-8 inside
// strings; appendRaw repairs that.
func validJSON(b []byte) bool {
	s := jsonChecker{b: b}
	if !s.value() {
		return false
	}
	s.skipSpace()
	return s.i == len(b)
}

// jsonChecker is the state of one validJSON call: the input, the read
// position and the current nesting depth.
type jsonChecker struct {
	b     []byte
	i     int
	depth int
}

func (s *jsonChecker) skipSpace() {
	for s.i < len(s.b) && isJSONSpace(s.b[s.i]) {
		s.i++
	}
}

func (s *jsonChecker) value() bool {
	s.skipSpace()
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object()
	case c == '[':
		return s.array()
	case c == '"':
		return s.string()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	}
	return false
}

// enter and leave count nesting around objects and arrays.
func (s *jsonChecker) enter() bool {
	s.i++
	s.depth++
	return s.depth <= maxJSONDepth
}

func (s *jsonChecker) leave() bool {
	s.i++
	s.depth--
	return true
}

func (s *jsonChecker) object() bool {
	if !s.enter() {
		return false
	}
	s.skipSpace()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		return s.leave()
	}
	for {
		s.skipSpace()
		if s.i >= len(s.b) || s.b[s.i] != '"' || !s.string() {
			return false
		}
		s.skipSpace()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		if !s.value() {
			return false
		}
		s.skipSpace()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			return s.leave()
		default:
			return false
		}
	}
}

func (s *jsonChecker) array() bool {
	if !s.enter() {
		return false
	}
	s.skipSpace()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		return s.leave()
	}
	for {
		if !s.value() {
			return false
		}
		s.skipSpace()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			return s.leave()
		default:
			return false
		}
	}
}

// string checks a string starting at the opening quote. It works on local
// copies of the buffer and position: this loop dominates validJSON, and
// keeping them out of the struct lets the compiler hold them in registers.
func (s *jsonChecker) string() bool {
	b, i := s.b, s.i+1
	for i < len(b) {
		c := b[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		switch c {
		case '"':
			s.i = i + 1
			return true
		case '\\':
			i++
			if i >= len(b) {
				return false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+4 >= len(b) || !isHex(b[i+1]) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) {
					return false
				}
				i += 5
			default:
				return false
			}
		default:
			// A control character must be escaped.
			return false
		}
	}
	return false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func (s *jsonChecker) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// number checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *jsonChecker) number() bool {
	if s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i >= len(s.b):
		return false
	case s.b[s.i] == '0':
		s.i++
	case s.b[s.i] >= '1' && s.b[s.i] <= '9':
		s.digits()
	default:
		return false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

func (s *jsonChecker) digits() int {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i - start
}

// appendRaw writes a raw object that validJSON accepted. Invalid UTF-8 can
// only sit inside its strings, so replacing each bad byte with U+FFFD, as
// encoding/json does when decoding, keeps the JSON valid and makes it valid
// UTF-8 as RFC 8259 requires. The usual all-valid case is a plain copy.
func appendRaw(dst, raw []byte) []byte {
	if utf8.Valid(raw) {
		return append(dst, raw...)
	}
	for len(raw) > 0 {
		r, size := utf8.DecodeRune(raw)
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, "\uFFFD"...)
		} else {
			dst = append(dst, raw[:size]...)
		}
		raw = raw[size:]
	}
	return dst
}

// MarshalJSON returns the v1 payload of e. Unlike AppendJSON it validates e
// first and returns the *ValidationError instead of a payload that would
// break the schema. It has a pointer receiver, so json.Marshal uses it only
// for an *Event.
func (e *Event) MarshalJSON() ([]byte, error) {
	raw, err := e.validate()
	if err != nil {
		return nil, err
	}
	return e.encode(nil, raw), nil
}

// AppendJSON appends the v1 payload of e to dst and returns the extended
// buffer. It is the hot-path encoder: it does not validate e (call Validate
// first, or use MarshalJSON or Message), so an invalid event yields a payload
// that breaks the schema. It never yields malformed JSON, though: strings are
// escaped, invalid UTF-8 becomes U+FFFD as with encoding/json, and a Raw
// that is not a JSON object is written as null.
func (e *Event) AppendJSON(dst []byte) []byte {
	raw, ok := rawObject(e.Raw)
	if !ok {
		raw = nil
	}
	return e.encode(dst, raw)
}

// encode writes the payload fields in the order the contract documents, with
// raw as returned by rawObject (nil for null). It sizes dst once up front;
// escaping, which real identifiers rarely need, may grow it again.
func (e *Event) encode(dst, raw []byte) []byte {
	n := payloadOverhead + len(e.ID) + len(e.Type) + len(e.Provider) + len(e.Account) +
		len(e.OrderID) + len(e.Status) + len(e.ProviderStatus) + len(e.ProviderStatusName) +
		len(e.Resolution) + len(raw)
	if e.Price != nil {
		n += len(e.Price.Amount) + len(e.Price.Currency)
	}
	dst = slices.Grow(dst, n)

	dst = append(dst, `{"schema_version":`...)
	dst = strconv.AppendInt(dst, SchemaVersion, 10)
	dst = append(dst, `,"event_id":`...)
	dst = appendString(dst, e.ID)
	dst = append(dst, `,"event_type":`...)
	dst = appendString(dst, string(e.Type))
	dst = append(dst, `,"provider":`...)
	dst = appendString(dst, e.Provider)
	dst = append(dst, `,"account":`...)
	dst = appendString(dst, e.Account)
	dst = append(dst, `,"order_id":`...)
	dst = appendString(dst, e.OrderID)
	dst = append(dst, `,"status":`...)
	dst = appendNullableString(dst, string(e.Status))
	dst = append(dst, `,"provider_status":`...)
	dst = appendNullableString(dst, e.ProviderStatus)
	dst = append(dst, `,"provider_status_name":`...)
	dst = appendNullableString(dst, e.ProviderStatusName)
	dst = append(dst, `,"terminal":`...)
	dst = strconv.AppendBool(dst, e.Terminal)
	dst = append(dst, `,"resolution":`...)
	dst = appendNullableString(dst, e.Resolution)
	dst = append(dst, `,"revision":`...)
	dst = strconv.AppendInt(dst, e.Revision, 10)
	dst = append(dst, `,"occurred_at":`...)
	dst = appendTime(dst, e.OccurredAt)
	dst = append(dst, `,"observed_at":`...)
	dst = appendTime(dst, e.ObservedAt)
	dst = append(dst, `,"price":`...)
	if e.Price == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, `{"amount":`...)
		dst = appendString(dst, e.Price.Amount)
		dst = append(dst, `,"currency":`...)
		dst = appendString(dst, e.Price.Currency)
		dst = append(dst, '}')
	}
	dst = append(dst, `,"point_id":`...)
	if e.PointID == nil {
		dst = append(dst, "null"...)
	} else {
		dst = strconv.AppendInt(dst, *e.PointID, 10)
	}
	dst = append(dst, `,"raw":`...)
	if raw == nil {
		dst = append(dst, "null"...)
	} else {
		dst = appendRaw(dst, raw)
	}
	return append(dst, '}')
}

// appendTime writes t as an RFC 3339 string in UTC with as many fractional
// digits as it needs, so that consumers never have to deal with offsets.
func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

// appendNullableString writes the empty string as null: in the payload an
// absent value is null, never "".
func appendNullableString(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, "null"...)
	}
	return appendString(dst, s)
}

// appendString writes s as a JSON string. It escapes what JSON requires
// (quote, backslash, control characters) plus U+2028 and U+2029, which
// JavaScript parsers once treated as line ends, and replaces invalid UTF-8
// with U+FFFD, as encoding/json does. It does not escape <, > and &, since
// the payload is never embedded in HTML. Runs of safe bytes are copied at
// once.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Message validates e and returns it as a Kafka message: key, CloudEvents
// attributes and JSON payload. The error, if any, is the *ValidationError
// from Validate.
func (e *Event) Message() (Message, error) { return e.MessageIn(nil) }

// MessageIn is Message with the key and source strings taken from a, so
// that a page of messages allocates little beyond the payloads.
func (e *Event) MessageIn(a *Arena) (Message, error) {
	raw, err := e.validate()
	if err != nil {
		return Message{}, err
	}
	return Message{
		ID:      e.ID,
		Key:     e.keyIn(a),
		Source:  sourceURIIn(a, e.Provider, e.Account),
		Type:    e.Type,
		Subject: e.OrderID,
		Time:    e.OccurredAt,
		Payload: e.encode(nil, raw),
	}, nil
}

// AppendHeaders appends m's CloudEvents headers (binary content mode) to dst,
// in this order: ce_specversion, ce_id, ce_source, ce_type, ce_time,
// ce_subject, content-type. ce_time is in UTC with RFC3339Nano precision.
// ce_time and ce_subject are optional in CloudEvents and are left out when
// m.Time is zero or m.Subject is empty, which never happens for a Message
// built by Event.Message.
//
// All values share one freshly allocated buffer, capped per header, so a
// Kafka client may keep them after the call and appending to one value never
// overwrites the next.
func (m *Message) AppendHeaders(dst []Header) []Header {
	dst, _ = m.AppendHeadersBuf(dst, nil)
	return dst
}

// AppendHeadersBuf is AppendHeaders with the values appended to buf, which
// it returns extended, so that a batch of messages can share one buffer.
// Each value is capped, so appending to buf later never changes it.
func (m *Message) AppendHeadersBuf(dst []Header, buf []byte) ([]Header, []byte) {
	var tbuf [len(time.RFC3339Nano) + 8]byte
	var ts []byte
	if !m.Time.IsZero() {
		ts = m.Time.UTC().AppendFormat(tbuf[:0], time.RFC3339Nano)
	}
	buf = slices.Grow(buf, len(SpecVersion)+len(m.ID)+len(m.Source)+len(m.Type)+
		len(ts)+len(m.Subject)+len(ContentType))
	dst = slices.Grow(dst, 7)

	dst, buf = appendHeader(dst, buf, HeaderSpecVersion, SpecVersion)
	dst, buf = appendHeader(dst, buf, HeaderID, m.ID)
	dst, buf = appendHeader(dst, buf, HeaderSource, m.Source)
	dst, buf = appendHeader(dst, buf, HeaderType, string(m.Type))
	if ts != nil {
		dst, buf = appendHeader(dst, buf, HeaderTime, ts)
	}
	if m.Subject != "" {
		dst, buf = appendHeader(dst, buf, HeaderSubject, m.Subject)
	}
	return appendHeader(dst, buf, HeaderContentType, ContentType)
}

// appendHeader copies val to the end of buf and appends a header whose value
// is that copy, capped so that it cannot grow into the next value.
func appendHeader[V string | []byte](dst []Header, buf []byte, key string, val V) ([]Header, []byte) {
	start := len(buf)
	buf = append(buf, val...)
	return append(dst, Header{Key: key, Value: buf[start:len(buf):len(buf)]}), buf
}

// payloadV1 is the decoding shape of a v1 payload. Nullable strings decode
// into plain strings because encoding/json leaves a string untouched on null,
// which is exactly the "null means empty" rule of the encoder.
type payloadV1 struct {
	SchemaVersion      int             `json:"schema_version"`
	EventID            string          `json:"event_id"`
	EventType          Type            `json:"event_type"`
	Provider           string          `json:"provider"`
	Account            string          `json:"account"`
	OrderID            string          `json:"order_id"`
	Status             Status          `json:"status"`
	ProviderStatus     string          `json:"provider_status"`
	ProviderStatusName string          `json:"provider_status_name"`
	Terminal           bool            `json:"terminal"`
	Resolution         string          `json:"resolution"`
	Revision           int64           `json:"revision"`
	OccurredAt         time.Time       `json:"occurred_at"`
	ObservedAt         time.Time       `json:"observed_at"`
	Price              *Price          `json:"price"`
	PointID            *int64          `json:"point_id"`
	Raw                json.RawMessage `json:"raw"`
}

// ParsePayload decodes a v1 payload into an Event, for consumers and tests.
// null fields become empty values and times are returned in UTC, so
// ParsePayload(e.AppendJSON(nil)) equals a valid e up to time zones and
// monotonic clock readings. Unknown fields are ignored, because additive
// changes keep schema_version 1. The decoded event must pass Validate.
func ParsePayload(b []byte) (Event, error) {
	var p payloadV1
	if err := json.Unmarshal(b, &p); err != nil {
		return Event{}, fmt.Errorf("event: parse payload: %w", err)
	}
	if p.SchemaVersion != SchemaVersion {
		return Event{}, fmt.Errorf("event: parse payload: unsupported schema_version %d", p.SchemaVersion)
	}
	// A RawMessage receives the literal null instead of staying nil.
	if string(p.Raw) == "null" {
		p.Raw = nil
	}
	e := Event{
		ID:                 p.EventID,
		Type:               p.EventType,
		Provider:           p.Provider,
		Account:            p.Account,
		OrderID:            p.OrderID,
		Status:             p.Status,
		ProviderStatus:     p.ProviderStatus,
		ProviderStatusName: p.ProviderStatusName,
		Terminal:           p.Terminal,
		Resolution:         p.Resolution,
		Revision:           p.Revision,
		OccurredAt:         p.OccurredAt.UTC(),
		ObservedAt:         p.ObservedAt.UTC(),
		Price:              p.Price,
		PointID:            p.PointID,
		Raw:                p.Raw,
	}
	if err := e.Validate(); err != nil {
		return Event{}, fmt.Errorf("event: parse payload: %w", err)
	}
	return e, nil
}
