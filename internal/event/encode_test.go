package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/race"
	"github.com/ingestd/ingestd/schemas"
)

// sampleRaw is a Yandex journal entry as the API returns it.
const sampleRaw = `{"operation_id":4242,"claim_id":"3b8d1af142664fde824626a7c19e2bd9","change_type":"status_changed","updated_ts":"2020-01-01T12:30:05+03:00","new_status":"delivered_finish","new_price":"20.00","new_currency":"RUB","resolution":"success","revision":7,"client_id":"95d010b2471041499b8cb1bfa282692f","current_point_id":372036854775807}`

// sampleEvent is the event ingestd builds from sampleRaw; docs/events.md
// shows its payload.
func sampleEvent() Event {
	point := int64(372036854775807)
	return Event{
		ID:             ID(ProviderYandex, "main", "3b8d1af142664fde824626a7c19e2bd9", "4242", "status_changed", "7"),
		Type:           TypeStatusChanged,
		Provider:       ProviderYandex,
		Account:        "main",
		OrderID:        "3b8d1af142664fde824626a7c19e2bd9",
		Status:         StatusDelivered,
		ProviderStatus: "delivered_finish",
		Terminal:       true,
		Resolution:     "success",
		Revision:       7,
		OccurredAt:     time.Date(2020, 1, 1, 12, 30, 5, 0, time.FixedZone("MSK", 3*60*60)),
		ObservedAt:     time.Date(2020, 1, 1, 9, 30, 7, 250_000_000, time.UTC),
		Price:          &Price{Amount: "20.00", Currency: "RUB"},
		PointID:        &point,
		Raw:            json.RawMessage(sampleRaw),
	}
}

// sampleGolden is sampleEvent's payload, written by hand from the contract:
// field order as documented, provider_status_name null because it is empty,
// occurred_at converted from +03:00 to UTC, observed_at with its fractional
// seconds trimmed to what is significant, raw verbatim.
const sampleGolden = `{"schema_version":1,` +
	`"event_id":"3f3000b8-1d52-54cb-950a-9923ae433f17",` +
	`"event_type":"delivery.status_changed",` +
	`"provider":"yandex",` +
	`"account":"main",` +
	`"order_id":"3b8d1af142664fde824626a7c19e2bd9",` +
	`"status":"delivered",` +
	`"provider_status":"delivered_finish",` +
	`"provider_status_name":null,` +
	`"terminal":true,` +
	`"resolution":"success",` +
	`"revision":7,` +
	`"occurred_at":"2020-01-01T09:30:05Z",` +
	`"observed_at":"2020-01-01T09:30:07.25Z",` +
	`"price":{"amount":"20.00","currency":"RUB"},` +
	`"point_id":372036854775807,` +
	`"raw":` + sampleRaw + `}`

// encodeCase is an event to encode, and the event decoding must give back
// when encoding is lossy (invalid UTF-8); a nil want means "the input, with
// times in UTC".
type encodeCase struct {
	name string
	ev   Event
	want *Event
}

func encodeCases() []encodeCase {
	observed := time.Date(2024, 5, 17, 8, 0, 0, 123456789, time.UTC)
	tashkent := time.FixedZone("UZT", 5*60*60)
	point := int64(-1)
	zeroPoint := int64(0)

	priceChanged := sampleEvent()
	priceChanged.ID = ID(ProviderYandex, "main", priceChanged.OrderID, "4243", "price_changed", "8")
	priceChanged.Type = TypePriceChanged
	priceChanged.Status = ""
	priceChanged.ProviderStatus = ""
	priceChanged.Terminal = false
	priceChanged.Resolution = ""
	priceChanged.Revision = 8
	priceChanged.Price = &Price{Amount: "-1234567890.5", Currency: "UZS"}
	priceChanged.PointID = &zeroPoint
	priceChanged.Raw = json.RawMessage(`{"change_type":"price_changed","new_price":"-1234567890.5","nested":{"a":[1,2,{"b":null}]}}`)

	unknown := sampleEvent()
	unknown.Status = StatusUnknown
	unknown.ProviderStatus = "teleported"
	unknown.Terminal = false
	unknown.Resolution = ""

	bts := Event{
		ID:                 ID(ProviderBTS, "tashkent", "123456", "1200", "3"),
		Type:               TypeStatusChanged,
		Provider:           ProviderBTS,
		Account:            "tashkent",
		OrderID:            "123456",
		Status:             StatusDelivered,
		ProviderStatus:     "1200",
		ProviderStatusName: "Доставлен",
		Terminal:           true,
		Revision:           3,
		OccurredAt:         time.Date(2024, 5, 17, 12, 59, 59, 999999999, tashkent),
		ObservedAt:         observed,
		Raw:                json.RawMessage(`{"orderId":123456,"status":{"code":1200,"name":"Доставлен"}}`),
	}

	bare := Event{
		ID:         ID(ProviderBTS, "", "1", "100", "1"),
		Type:       TypeStatusChanged,
		Provider:   ProviderBTS,
		OrderID:    "1",
		Status:     StatusCreated,
		OccurredAt: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
		ObservedAt: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
	}

	escapes := bare
	escapes.Account = "acc\n\t<&>\u007f"
	escapes.OrderID = `ord"er\1/`
	escapes.ProviderStatus = "\x00\x01\x08\x0c\x1f"
	escapes.ProviderStatusName = "Курьер\u2028доставляет\u2029 🚚 \ufffd"
	escapes.Resolution = "\r\n"
	escapes.PointID = &point

	invalidUTF8 := bare
	invalidUTF8.OrderID = "id\xc3"
	invalidUTF8.ProviderStatusName = "bad\xff\xfe\xed\xa0\x80end"
	invalidUTF8.Resolution = "\xf0\x9f\x9a"
	invalidWant := invalidUTF8
	invalidWant.OccurredAt = invalidUTF8.OccurredAt.UTC()
	invalidWant.ObservedAt = invalidUTF8.ObservedAt.UTC()
	invalidWant.OrderID = "id\ufffd"
	invalidWant.ProviderStatusName = "bad\ufffd\ufffd\ufffd\ufffd\ufffdend"
	invalidWant.Resolution = "\ufffd\ufffd\ufffd"

	return []encodeCase{
		{name: "status change", ev: sampleEvent()},
		{name: "price change with null status", ev: priceChanged},
		{name: "unknown status", ev: unknown},
		{name: "bts with name", ev: bts},
		{name: "nil price point raw", ev: bare},
		{name: "strings needing escapes", ev: escapes},
		{name: "invalid utf-8", ev: invalidUTF8, want: &invalidWant},
	}
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	sch, err := schemas.CompileDeliveryEventV1()
	require.NoError(t, err)
	return sch
}

func validatePayload(t *testing.T, sch *jsonschema.Schema, payload []byte) error {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	require.NoError(t, err, "payload is not JSON: %s", payload)
	return sch.Validate(doc)
}

func TestAppendJSONGolden(t *testing.T) {
	t.Parallel()
	e := sampleEvent()
	require.Equal(t, sampleGolden, string(e.AppendJSON(nil)))

	// MarshalJSON, json.Marshal and Message all give the same bytes.
	b, err := e.MarshalJSON()
	require.NoError(t, err)
	require.Equal(t, sampleGolden, string(b))
	b, err = json.Marshal(&e)
	require.NoError(t, err)
	require.Equal(t, sampleGolden, string(b))
	m, err := e.Message()
	require.NoError(t, err)
	require.Equal(t, sampleGolden, string(m.Payload))
}

func TestAppendJSONAppendsToDst(t *testing.T) {
	t.Parallel()
	e := sampleEvent()
	got := e.AppendJSON([]byte("prefix:"))
	require.Equal(t, "prefix:"+sampleGolden, string(got))
}

func TestAppendJSONSatisfiesSchema(t *testing.T) {
	t.Parallel()
	sch := compileSchema(t)
	for _, tc := range encodeCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.NoError(t, tc.ev.Validate())
			payload := tc.ev.AppendJSON(nil)
			require.NoError(t, validatePayload(t, sch, payload), "%s", payload)
		})
	}
}

func TestAppendJSONRoundTrips(t *testing.T) {
	t.Parallel()
	for _, tc := range encodeCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			payload := tc.ev.AppendJSON(nil)
			require.True(t, json.Valid(payload), "%s", payload)

			got, err := ParsePayload(payload)
			require.NoError(t, err)
			want := tc.ev
			if tc.want != nil {
				want = *tc.want
			}
			require.True(t, want.OccurredAt.Equal(got.OccurredAt))
			require.True(t, want.ObservedAt.Equal(got.ObservedAt))
			want.OccurredAt = want.OccurredAt.UTC()
			want.ObservedAt = want.ObservedAt.UTC()
			require.Equal(t, want, got)

			// Encoding the decoded event gives the same bytes, except where
			// invalid UTF-8 was escaped as \ufffd and now is a literal U+FFFD.
			require.Equal(t, string(want.AppendJSON(nil)), string(got.AppendJSON(nil)))
			if tc.want == nil {
				require.Equal(t, string(payload), string(got.AppendJSON(nil)))
			}
		})
	}
}

func TestAppendJSONNullsEmptyFields(t *testing.T) {
	t.Parallel()
	bare := encodeCases()[4].ev
	require.Equal(t, "nil price point raw", encodeCases()[4].name)
	var m map[string]any
	require.NoError(t, json.Unmarshal(bare.AppendJSON(nil), &m))
	require.Len(t, m, 17)
	for _, k := range []string{"provider_status", "provider_status_name", "resolution", "price", "point_id", "raw"} {
		v, ok := m[k]
		require.True(t, ok, "%s missing", k)
		require.Nil(t, v, "%s", k)
	}
	require.Equal(t, "", m["account"], "account is a string even when empty")
	require.Equal(t, "0001-01-01T00:00:00.000000001Z", m["occurred_at"])

	priceChanged := encodeCases()[1].ev
	require.Contains(t, string(priceChanged.AppendJSON(nil)), `"status":null,`)
}

func TestAppendJSONRawThatIsNotAnObject(t *testing.T) {
	t.Parallel()
	sch := compileSchema(t)
	tests := []struct {
		name string
		raw  string
		want string // the encoded "raw" value
	}{
		{"truncated", `{"a":1`, "null"},
		{"not json", `hello`, "null"},
		{"array", `[1,2]`, "null"},
		{"json null", `null`, "null"},
		{"two objects", `{}{}`, "null"},
		{"only spaces", " \n\t", "null"},
		{"surrounding whitespace is trimmed", " \n{\"a\": [1, 2]}\r\n ", `{"a": [1, 2]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := sampleEvent()
			e.Raw = json.RawMessage(tt.raw)
			payload := e.AppendJSON(nil)
			require.True(t, json.Valid(payload), "%s", payload)
			require.True(t, bytes.HasSuffix(payload, []byte(`,"raw":`+tt.want+`}`)), "%s", payload)
			require.NoError(t, validatePayload(t, sch, payload))

			_, err := e.MarshalJSON()
			if tt.want == "null" {
				var verr *ValidationError
				require.ErrorAs(t, err, &verr)
				require.Equal(t, "raw", verr.Field)
			} else {
				require.NoError(t, err)
			}
		})
	}
}

func TestSchemaRejectsContractViolations(t *testing.T) {
	t.Parallel()
	sch := compileSchema(t)
	tests := []struct {
		name   string
		mutate func(m map[string]any)
	}{
		{"missing field", func(m map[string]any) { delete(m, "point_id") }},
		{"extra field", func(m map[string]any) { m["extra"] = 1 }},
		{"schema version 2", func(m map[string]any) { m["schema_version"] = 2 }},
		{"event_id not a uuid", func(m map[string]any) { m["event_id"] = "claim-1" }},
		{"unknown event type", func(m map[string]any) { m["event_type"] = "delivery.created" }},
		{"unknown provider", func(m map[string]any) { m["provider"] = "dhl" }},
		{"empty order id", func(m map[string]any) { m["order_id"] = "" }},
		{"non-canonical status", func(m map[string]any) { m["status"] = "pickuped" }},
		{"empty provider status", func(m map[string]any) { m["provider_status"] = "" }},
		{"terminal as string", func(m map[string]any) { m["terminal"] = "true" }},
		{"fractional revision", func(m map[string]any) { m["revision"] = 1.5 }},
		{"occurred_at not rfc3339", func(m map[string]any) { m["occurred_at"] = "2020-01-01 09:30:05" }},
		{"observed_at missing zone", func(m map[string]any) { m["observed_at"] = "2020-01-01T09:30:05" }},
		{"amount as number", func(m map[string]any) { m["price"] = map[string]any{"amount": 20, "currency": "RUB"} }},
		{"amount with comma", func(m map[string]any) { m["price"] = map[string]any{"amount": "20,00", "currency": "RUB"} }},
		{"lowercase currency", func(m map[string]any) { m["price"] = map[string]any{"amount": "20.00", "currency": "rub"} }},
		{"price without currency", func(m map[string]any) { m["price"] = map[string]any{"amount": "20.00"} }},
		{"raw array", func(m map[string]any) { m["raw"] = []any{1} }},
		{"point_id string", func(m map[string]any) { m["point_id"] = "1" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(sampleGolden), &m))
			tt.mutate(m)
			b, err := json.Marshal(m)
			require.NoError(t, err)
			require.Error(t, validatePayload(t, sch, b))
		})
	}
	// The unmodified golden payload passes, so the failures above are due to
	// the mutations alone.
	require.NoError(t, validatePayload(t, sch, []byte(sampleGolden)))
}

// encodingJSONString is the reference encoding of s: encoding/json without
// HTML escaping, which appendString must match byte for byte.
func encodingJSONString(t testing.TB, s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(s))
	return strings.TrimSuffix(buf.String(), "\n")
}

func stringSeeds() []string {
	seeds := []string{
		"", "plain", `"`, `\`, "/", "<>&", "\x7f", "\u2028", "\u2029", "a\u2028b\u2029c",
		"\xff", "\xc3", "\xc3(", "\xed\xa0\x80", "\xf0\x9f\x9a", "\xf4\x90\x80\x80",
		"\ufffd", "Доставлен", "🚚", "mixed \"quote\" and \\slash\\ and \x00 nul",
	}
	for c := range 0x20 {
		seeds = append(seeds, "x"+string(rune(c))+"y")
	}
	return seeds
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, s := range stringSeeds() {
		require.Equal(t, encodingJSONString(t, s), string(appendString(nil, s)), "%q", s)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range stringSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString([]byte("x"), s)
		require.Equal(t, "x"+encodingJSONString(t, s), string(got))
	})
}

func jsonSeeds() []string {
	return []string{
		``, ` `, `{}`, ` {} `, `[]`, `[ ]`, `{"a":1}`, `{"a" : [1, 2.5, -0, 1e3, 1E-3, 2.0e+10]}`,
		`{"a":1,}`, `{,}`, `{"a"}`, `{"a":}`, `{1:2}`, `{"a":1 "b":2}`, `[1,]`, `[,1]`, `[1 2]`,
		`true`, `false`, `null`, `tru`, `nul`, `truex`, `True`, `"x"`, `"x`, `"\"`, `"\u00e9"`,
		`"\u00g9"`, `"\u00e"`, `"\x"`, `"\/"`, "\"\t\"", "\"\x01\"", "\"\x7f\"", "\"\xff\"",
		`01`, `-`, `-0`, `-01`, `1.`, `.5`, `1e`, `1e+`, `+1`, `0x10`, `1.5e3`, `[-]`,
		`{"a":{"b":{"c":[[[]]]}}}`, `{}{}`, `{} x`, "\t{}\n", `[`, `]`, `{"a":1`, `{"a"`,
		`{"a":nul}`, `{"a":"b",  "c" : null }`, sampleRaw,
		strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth),
		strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1),
		strings.Repeat(`{"a":`, maxJSONDepth) + "1" + strings.Repeat("}", maxJSONDepth),
		strings.Repeat(`{"a":`, maxJSONDepth+1) + "1" + strings.Repeat("}", maxJSONDepth+1),
	}
}

func TestValidJSONMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, s := range jsonSeeds() {
		require.Equal(t, json.Valid([]byte(s)), validJSON([]byte(s)), "%.80q", s)
	}
	// The depth limit is exercised on both sides.
	require.True(t, validJSON([]byte(jsonSeeds()[len(jsonSeeds())-4])))
	require.False(t, validJSON([]byte(jsonSeeds()[len(jsonSeeds())-3])))
}

func FuzzValidJSON(f *testing.F) {
	for _, s := range jsonSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		require.Equal(t, json.Valid(b), validJSON(b), "%q", b)
	})
}

func TestAppendJSONRepairsInvalidUTF8InRaw(t *testing.T) {
	t.Parallel()
	e := sampleEvent()
	e.Raw = json.RawMessage("{\"name\":\"a\xffb\xc3\",\"ok\":\"é\"}")
	require.NoError(t, e.Validate())
	payload := e.AppendJSON(nil)
	require.True(t, json.Valid(payload))
	require.True(t, utf8.Valid(payload), "%q", payload)
	require.True(t, bytes.HasSuffix(payload, []byte(",\"raw\":{\"name\":\"a\ufffdb\ufffd\",\"ok\":\"é\"}}")), "%s", payload)

	got, err := ParsePayload(payload)
	require.NoError(t, err)
	require.Equal(t, "{\"name\":\"a\ufffdb\ufffd\",\"ok\":\"é\"}", string(got.Raw))
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mutate  func(e *Event)
		field   string
		message string
	}{
		{"empty id", func(e *Event) { e.ID = "" }, "event_id", "event: event_id is empty"},
		{"id not a uuid", func(e *Event) { e.ID = "claim-1" }, "event_id", `event: event_id "claim-1" is not a UUID in canonical form`},
		{"id as urn", func(e *Event) { e.ID = "urn:uuid:" + e.ID }, "event_id", ""},
		{"empty type", func(e *Event) { e.Type = "" }, "event_type", "event: event_type is empty"},
		{"unknown type", func(e *Event) { e.Type = "delivery.created" }, "event_type", `event: event_type "delivery.created" is not a v1 event type`},
		{"empty provider", func(e *Event) { e.Provider = "" }, "provider", "event: provider is empty"},
		{"unknown provider", func(e *Event) { e.Provider = "dhl" }, "provider", `event: provider "dhl" is not a known provider`},
		{"empty order id", func(e *Event) { e.OrderID = "" }, "order_id", "event: order_id is empty"},
		{"raw status", func(e *Event) { e.Status = "pickuped" }, "status", `event: status "pickuped" is not a canonical status`},
		{"zero occurred_at", func(e *Event) { e.OccurredAt = time.Time{} }, "occurred_at", "event: occurred_at is zero"},
		{"zero observed_at", func(e *Event) { e.ObservedAt = time.Time{} }, "observed_at", "event: observed_at is zero"},
		{"year 10000", func(e *Event) { e.ObservedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "observed_at", "event: observed_at year 10000 is outside 0000-9999"},
		{"amount empty", func(e *Event) { e.Price = &Price{Currency: "RUB"} }, "price.amount", `event: price.amount "" is not a decimal number`},
		{"amount trailing dot", func(e *Event) { e.Price = &Price{Amount: "20.", Currency: "RUB"} }, "price.amount", ""},
		{"amount leading dot", func(e *Event) { e.Price = &Price{Amount: ".5", Currency: "RUB"} }, "price.amount", ""},
		{"amount plus sign", func(e *Event) { e.Price = &Price{Amount: "+5", Currency: "RUB"} }, "price.amount", ""},
		{"amount exponent", func(e *Event) { e.Price = &Price{Amount: "1e3", Currency: "RUB"} }, "price.amount", ""},
		{"amount bare minus", func(e *Event) { e.Price = &Price{Amount: "-", Currency: "RUB"} }, "price.amount", ""},
		{"currency empty", func(e *Event) { e.Price = &Price{Amount: "20.00"} }, "price.currency", `event: price.currency "" is not a 3-letter currency code`},
		{"currency lowercase", func(e *Event) { e.Price = &Price{Amount: "20.00", Currency: "rub"} }, "price.currency", ""},
		{"currency long", func(e *Event) { e.Price = &Price{Amount: "20.00", Currency: "RUBL"} }, "price.currency", ""},
		{"raw not json", func(e *Event) { e.Raw = json.RawMessage("{") }, "raw", "event: raw is not a JSON object"},
		{"raw array", func(e *Event) { e.Raw = json.RawMessage("[]") }, "raw", "event: raw is not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := sampleEvent()
			tt.mutate(&e)
			err := e.Validate()
			var verr *ValidationError
			require.ErrorAs(t, err, &verr)
			require.Equal(t, tt.field, verr.Field)
			if tt.message != "" {
				require.EqualError(t, err, tt.message)
			}

			_, err = e.MarshalJSON()
			require.ErrorAs(t, err, &verr)
			_, err = e.Message()
			require.ErrorAs(t, err, &verr)
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(e *Event)
	}{
		{"negative amount", func(e *Event) { e.Price.Amount = "-0.5" }},
		{"integer amount", func(e *Event) { e.Price.Amount = "100" }},
		{"no status", func(e *Event) { e.Status = "" }},
		{"unknown status", func(e *Event) { e.Status = StatusUnknown }},
		{"empty account", func(e *Event) { e.Account = "" }},
		{"no raw", func(e *Event) { e.Raw = nil }},
		{"raw with whitespace", func(e *Event) { e.Raw = json.RawMessage(" {}\n") }},
		{"uppercase id", func(e *Event) { e.ID = strings.ToUpper(e.ID) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := sampleEvent()
			tt.mutate(&e)
			require.NoError(t, e.Validate())
		})
	}
}

func TestKeyAndSource(t *testing.T) {
	t.Parallel()
	e := sampleEvent()
	require.Equal(t, "yandex:3b8d1af142664fde824626a7c19e2bd9", e.Key())
	require.Equal(t, "/ingestd/yandex/main", e.Source())
	require.Equal(t, "/ingestd/bts/tashkent", SourceURI(ProviderBTS, "tashkent"))
}

func TestMessage(t *testing.T) {
	t.Parallel()
	e := sampleEvent()
	m, err := e.Message()
	require.NoError(t, err)
	require.Equal(t, "3f3000b8-1d52-54cb-950a-9923ae433f17", m.ID)
	require.Equal(t, "yandex:3b8d1af142664fde824626a7c19e2bd9", m.Key)
	require.Equal(t, "/ingestd/yandex/main", m.Source)
	require.Equal(t, TypeStatusChanged, m.Type)
	require.Equal(t, "3b8d1af142664fde824626a7c19e2bd9", m.Subject)
	require.True(t, m.Time.Equal(e.OccurredAt))
	require.Equal(t, sampleGolden, string(m.Payload))
}

func headerMap(t *testing.T, hs []Header) []string {
	t.Helper()
	out := make([]string, 0, len(hs))
	for _, h := range hs {
		out = append(out, h.Key+"="+string(h.Value))
	}
	return out
}

func TestAppendHeaders(t *testing.T) {
	t.Parallel()
	e := sampleEvent()
	m, err := e.Message()
	require.NoError(t, err)

	existing := []Header{{Key: "ingestd_seq", Value: []byte("41")}}
	hs := m.AppendHeaders(existing)
	require.Equal(t, []string{
		"ingestd_seq=41",
		"ce_specversion=1.0",
		"ce_id=3f3000b8-1d52-54cb-950a-9923ae433f17",
		"ce_source=/ingestd/yandex/main",
		"ce_type=delivery.status_changed",
		"ce_time=2020-01-01T09:30:05Z",
		"ce_subject=3b8d1af142664fde824626a7c19e2bd9",
		"content-type=application/json",
	}, headerMap(t, hs))
	require.Equal(t, HeaderSpecVersion, hs[1].Key)
	require.Equal(t, HeaderID, hs[2].Key)
	require.Equal(t, HeaderSource, hs[3].Key)
	require.Equal(t, HeaderType, hs[4].Key)
	require.Equal(t, HeaderTime, hs[5].Key)
	require.Equal(t, HeaderSubject, hs[6].Key)
	require.Equal(t, HeaderContentType, hs[7].Key)

	// Values share a buffer; appending to one must not overwrite the next.
	_ = append(hs[2].Value, "XXXXXXXX"...)
	require.Equal(t, "/ingestd/yandex/main", string(hs[3].Value))
}

func TestAppendHeadersFractionalTimeInUTC(t *testing.T) {
	t.Parallel()
	m := Message{
		ID:      "id",
		Source:  "/ingestd/bts/tashkent",
		Type:    TypePriceChanged,
		Subject: "123",
		Time:    time.Date(2024, 5, 17, 12, 0, 0, 1500, time.FixedZone("UZT", 5*60*60)),
	}
	hs := m.AppendHeaders(nil)
	require.Equal(t, "ce_time=2024-05-17T07:00:00.0000015Z", headerMap(t, hs)[4])
}

func TestAppendHeadersOmitsAbsentOptionalAttributes(t *testing.T) {
	t.Parallel()
	m := Message{ID: "id", Source: "/ingestd/bts/a", Type: TypeStatusChanged}
	require.Equal(t, []string{
		"ce_specversion=1.0",
		"ce_id=id",
		"ce_source=/ingestd/bts/a",
		"ce_type=delivery.status_changed",
		"content-type=application/json",
	}, headerMap(t, m.AppendHeaders(nil)))
}

func TestParsePayloadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		payload string
		want    string
	}{
		{"not json", `{"schema_version":`, "event: parse payload: unexpected end of JSON input"},
		{"other version", strings.Replace(sampleGolden, `"schema_version":1`, `"schema_version":2`, 1), "event: parse payload: unsupported schema_version 2"},
		{"no version", `{}`, "event: parse payload: unsupported schema_version 0"},
		{"null order id", strings.Replace(sampleGolden, `"order_id":"3b8d1af142664fde824626a7c19e2bd9"`, `"order_id":null`, 1), "event: parse payload: event: order_id is empty"},
		{"bad time", strings.Replace(sampleGolden, `"2020-01-01T09:30:05Z"`, `"yesterday"`, 1), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParsePayload([]byte(tt.payload))
			require.Error(t, err)
			if tt.want != "" {
				require.EqualError(t, err, tt.want)
			}
		})
	}
}

func TestParsePayloadIgnoresUnknownFields(t *testing.T) {
	t.Parallel()
	// Additive changes keep schema_version 1, so a v1 reader must accept a
	// payload with fields it does not know.
	payload := strings.Replace(sampleGolden, `"schema_version":1,`, `"schema_version":1,"added_later":{"x":1},`, 1)
	got, err := ParsePayload([]byte(payload))
	require.NoError(t, err)
	require.Equal(t, sampleGolden, string(got.AppendJSON(nil)))
}

func TestMarshalJSONAllocatesOnce(t *testing.T) {
	if race.Enabled {
		t.Skip("allocation counts are only meaningful without -race")
	}
	e := sampleEvent()
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := e.MarshalJSON(); err != nil {
			panic(err)
		}
	})
	require.Equal(t, 1.0, allocs)

	buf := make([]byte, 0, 4096)
	allocs = testing.AllocsPerRun(100, func() {
		buf = e.AppendJSON(buf[:0])
	})
	require.Equal(t, 0.0, allocs, "a large enough dst must be reused")
}

func TestErrorsAsThroughWrapping(t *testing.T) {
	t.Parallel()
	e := sampleEvent()
	e.OrderID = ""
	_, err := json.Marshal(&e)
	var verr *ValidationError
	require.True(t, errors.As(err, &verr), "%v", err)
	require.Equal(t, "order_id", verr.Field)
}

func BenchmarkAppendJSON(b *testing.B) {
	e := sampleEvent()
	b.ReportAllocs()
	b.SetBytes(int64(len(sampleGolden)))
	for b.Loop() {
		_ = e.AppendJSON(nil)
	}
}

func BenchmarkAppendJSONReuse(b *testing.B) {
	e := sampleEvent()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(sampleGolden)))
	for b.Loop() {
		buf = e.AppendJSON(buf[:0])
	}
}

func BenchmarkMarshalJSON(b *testing.B) {
	e := sampleEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMessageWithHeaders(b *testing.B) {
	e := sampleEvent()
	hs := make([]Header, 0, 16)
	b.ReportAllocs()
	for b.Loop() {
		m, err := e.Message()
		if err != nil {
			b.Fatal(err)
		}
		hs = m.AppendHeaders(hs[:0])
	}
}

func BenchmarkID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = ID(ProviderYandex, "main", "3b8d1af142664fde824626a7c19e2bd9", "4242", "status_changed", "7")
	}
}

// TestRawCheckedSkipsOnlyTheRescan: a Raw its decoder already checked is
// encoded exactly as an unchecked one; an unchecked Raw is still checked.
func TestRawCheckedSkipsOnlyTheRescan(t *testing.T) {
	t.Parallel()
	e := sampleEvent()
	e.Raw = json.RawMessage(`{"claim_id":"c1","nested":{"a":[1,2,"x"]}}`)
	plain, err := e.Message()
	require.NoError(t, err)
	e.RawChecked = true
	checked, err := e.Message()
	require.NoError(t, err)
	require.Equal(t, plain.Payload, checked.Payload)

	bad := sampleEvent()
	bad.Raw = json.RawMessage(`{"claim_id":`)
	_, err = bad.Message()
	var verr *ValidationError
	require.ErrorAs(t, err, &verr)
	require.Equal(t, "raw", verr.Field)
}

// TestAppendHeadersBufSharesOneBuffer: messages appending their header
// values to one buffer never change each other's values.
func TestAppendHeadersBufSharesOneBuffer(t *testing.T) {
	t.Parallel()
	a, b := sampleEvent(), sampleEvent()
	b.ID, b.OrderID = ID(ProviderYandex, "main", "other", "1", "status_changed", "1"), "other"
	ma, err := a.Message()
	require.NoError(t, err)
	mb, err := b.Message()
	require.NoError(t, err)
	// Room for both, so the second appends into the same array.
	buf := make([]byte, 0, 1024)
	ha, buf := ma.AppendHeadersBuf(nil, buf)
	first := headerMap(t, ha)
	hb, grown := mb.AppendHeadersBuf(nil, buf)
	require.Equal(t, &buf[:1][0], &grown[:1][0], "one shared array")
	require.Equal(t, first, headerMap(t, ha), "the first message's values are intact")
	require.Equal(t, headerMap(t, mb.AppendHeaders(nil)), headerMap(t, hb))
	require.Equal(t, headerMap(t, ma.AppendHeaders(nil)), first)
}
