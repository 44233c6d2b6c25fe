package schemas_test

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"go.yaml.in/yaml/v3"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/publish"
	"github.com/ingestd/ingestd/internal/yandex"
	"github.com/ingestd/ingestd/schemas"
)

const (
	// asyncAPIFile is the document under test, relative to this package.
	asyncAPIFile = "asyncapi.yaml"
	// asyncAPISpecFile is the AsyncAPI 3.0.0 JSON Schema, vendored because
	// the tests run offline; testdata/README.md says where it came from.
	asyncAPISpecFile = "testdata/asyncapi-3.0.0.json"
	// asyncAPISpecID is the $id the vendored schema declares.
	asyncAPISpecID = "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
)

// jsonValue decodes JSON as jsonschema validates it, with numbers as
// json.Number, so that large integers such as point_id stay exact.
func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	require.NoError(t, err)
	return v
}

// asyncAPIDoc returns asyncapi.yaml as the JSON value an AsyncAPI tool
// reads. The YAML is turned into JSON first, so that what is validated is
// exactly what a JSON reader of the document would see. Each call decodes
// afresh, so callers may modify the result.
func asyncAPIDoc(t *testing.T) map[string]any {
	t.Helper()
	y, err := os.ReadFile(asyncAPIFile)
	require.NoError(t, err)
	var v any
	require.NoError(t, yaml.Unmarshal(y, &v))
	j, err := json.Marshal(v)
	require.NoError(t, err)
	doc, ok := jsonValue(t, j).(map[string]any)
	require.True(t, ok, "%s is not a mapping", asyncAPIFile)
	return doc
}

// pointer returns the value at the JSON pointer ptr ("/a/b") in doc.
func pointer(t *testing.T, doc any, ptr string) any {
	t.Helper()
	v := doc
	if ptr == "" {
		return v
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			v, ok = x[tok]
			require.True(t, ok, "%s: no %q", ptr, tok)
		case []any:
			i, err := strconv.Atoi(tok)
			require.NoError(t, err, "%s: %q indexes an array", ptr, tok)
			require.Less(t, i, len(x), "%s: index %d", ptr, i)
			v = x[i]
		default:
			require.FailNow(t, "no such location", "%s: %q is inside a %T", ptr, tok, v)
		}
	}
	return v
}

// object is pointer for a value that must be an object.
func object(t *testing.T, doc any, ptr string) map[string]any {
	t.Helper()
	m, ok := pointer(t, doc, ptr).(map[string]any)
	require.True(t, ok, "%s is not an object", ptr)
	return m
}

// follow returns the pointer that ptr leads to once every local Reference
// Object ({"$ref": "#/..."}) on the way is followed, as AsyncAPI tools
// resolve the channel's messages and the messages' bindings.
func follow(t *testing.T, doc any, ptr string) string {
	t.Helper()
	for range 10 {
		m, ok := pointer(t, doc, ptr).(map[string]any)
		if !ok {
			return ptr
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return ptr
		}
		require.True(t, strings.HasPrefix(ref, "#/"), "%s refers outside the document: %s", ptr, ref)
		ptr = ref[1:]
	}
	require.FailNow(t, "reference cycle", ptr)
	return ""
}

// theChannel returns the pointer of the document's one channel.
func theChannel(t *testing.T, doc any) string {
	t.Helper()
	channels := object(t, doc, "/channels")
	require.Len(t, channels, 1, "ingestd publishes to one topic")
	for id := range channels {
		return "/channels/" + id
	}
	return ""
}

// TestAsyncAPIDocumentIsValidAsyncAPI300 validates asyncapi.yaml against the
// AsyncAPI 3.0.0 specification's own JSON Schema. The cases after the first
// break the document on purpose, to show that the vendored schema is strict
// where this document could go wrong, so that its passing means something.
func TestAsyncAPIDocumentIsValidAsyncAPI300(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(asyncAPISpecFile)
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	require.NoError(t, c.AddResource(asyncAPISpecID, jsonValue(t, b)))
	spec, err := c.Compile(asyncAPISpecID)
	require.NoError(t, err)

	tests := []struct {
		name   string
		mutate func(t *testing.T, doc map[string]any)
		// wantAt is where the error must point; empty means valid.
		wantAt string
	}{
		{name: "the document as committed"},
		{
			name:   "another AsyncAPI version",
			mutate: func(_ *testing.T, doc map[string]any) { doc["asyncapi"] = "2.6.0" },
			wantAt: "/asyncapi",
		},
		{
			name: "a field the channel object does not have",
			mutate: func(t *testing.T, doc map[string]any) {
				object(t, doc, theChannel(t, doc))["topic"] = "delivery.status-changes"
			},
			wantAt: "/channels/",
		},
		{
			name: "a Kafka channel binding with a partition count of zero",
			mutate: func(t *testing.T, doc map[string]any) {
				object(t, doc, theChannel(t, doc)+"/bindings/kafka")["partitions"] = json.Number("0")
			},
			wantAt: "/bindings/kafka/partitions",
		},
		{
			name: "a Kafka message binding with a field it does not have",
			mutate: func(t *testing.T, doc map[string]any) {
				object(t, doc, "/components/messageBindings/deliveryEventKey/kafka")["keySchema"] = "string"
			},
			wantAt: "/components/messageBindings/deliveryEventKey/kafka",
		},
		{
			name: "an operation without its action",
			mutate: func(t *testing.T, doc map[string]any) {
				delete(object(t, doc, "/operations/publishDeliveryEvents"), "action")
			},
			wantAt: "/operations/publishDeliveryEvents",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc := asyncAPIDoc(t)
			if tc.mutate != nil {
				tc.mutate(t, doc)
			}
			err := spec.Validate(any(doc))
			if tc.wantAt == "" {
				require.NoError(t, err)
				return
			}
			var verr *jsonschema.ValidationError
			require.ErrorAs(t, err, &verr)
			require.Contains(t, err.Error(), tc.wantAt)
		})
	}
}

// messageSchemas are the compiled schemas of one message of the channel.
type messageSchemas struct {
	headers, payload, key *jsonschema.Schema
}

// compileMessages compiles the headers, payload and Kafka key schema of
// every message of the channel, by message id, exactly where the document
// puts them. The document itself is the compiler's resource, at its own
// file URL, so that the payload's relative $ref to delivery-event.v1.json is
// resolved as any JSON Schema tool resolves it: the test fails if the
// reference does not lead to the file.
func compileMessages(t *testing.T, doc map[string]any) map[string]messageSchemas {
	t.Helper()
	abs, err := filepath.Abs(asyncAPIFile)
	require.NoError(t, err)
	base := "file://" + filepath.ToSlash(abs)
	c := jsonschema.NewCompiler()
	// The AsyncAPI Schema Object is a superset of draft-07, so a schema in
	// the document is draft-07; delivery-event.v1.json names its own draft.
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	require.NoError(t, c.AddResource(base, any(doc)))
	compile := func(ptr string) *jsonschema.Schema {
		s, err := c.Compile(base + "#" + ptr)
		require.NoError(t, err, "compile %s#%s", asyncAPIFile, ptr)
		return s
	}
	channel := theChannel(t, doc)
	out := map[string]messageSchemas{}
	for id := range object(t, doc, channel+"/messages") {
		msg := follow(t, doc, channel+"/messages/"+id)
		out[id] = messageSchemas{
			headers: compile(msg + "/headers"),
			payload: compile(msg + "/payload"),
			key:     compile(follow(t, doc, msg+"/bindings") + "/kafka/key"),
		}
	}
	return out
}

// schemaProperties returns the property names a schema in doc names,
// through local $refs and allOf, as a set.
func schemaProperties(t *testing.T, doc any, ptr string) map[string]bool {
	t.Helper()
	ptr = follow(t, doc, ptr)
	s := object(t, doc, ptr)
	out := map[string]bool{}
	if props, ok := s["properties"].(map[string]any); ok {
		for name := range props {
			out[name] = true
		}
	}
	if all, ok := s["allOf"].([]any); ok {
		for i := range all {
			maps.Copy(out, schemaProperties(t, doc, ptr+"/allOf/"+strconv.Itoa(i)))
		}
	}
	return out
}

// recordCase is one event as the daemon publishes it: built by the
// provider's normalization from an upstream record, and named after the
// document's example that shows it, so that every example is a record the
// publisher really writes.
type recordCase struct {
	example string
	// message is the id of the channel message the record must match, and
	// no other.
	message  string
	sourceID string
	event    func() (event.Event, error)
}

func recordCases() []recordCase {
	point := int64(372036854775807)
	return []recordCase{
		{
			example:  "yandex-status-changed",
			message:  "statusChanged",
			sourceID: "yandex/main",
			event: func() (event.Event, error) {
				// The entry of docs/events.md's example.
				e := yandex.Entry{
					OperationID: 4242, ClaimID: "3b8d1af142664fde824626a7c19e2bd9", ChangeType: "status_changed",
					UpdatedTS: "2020-01-01T12:30:05+03:00", NewStatus: "delivered_finish", NewPrice: "20.00",
					NewCurrency: "RUB", Resolution: "success", Revision: 7, ClientID: "95d010b2471041499b8cb1bfa282692f",
					CurrentPointID: &point,
					Raw: json.RawMessage(`{"operation_id":4242,"claim_id":"3b8d1af142664fde824626a7c19e2bd9",` +
						`"change_type":"status_changed","updated_ts":"2020-01-01T12:30:05+03:00","new_status":"delivered_finish",` +
						`"new_price":"20.00","new_currency":"RUB","resolution":"success","revision":7,` +
						`"client_id":"95d010b2471041499b8cb1bfa282692f","current_point_id":372036854775807}`),
				}
				return yandex.Normalize("main", &e, time.Date(2020, 1, 1, 9, 30, 7, 250_000_000, time.UTC))
			},
		},
		{
			example:  "yandex-price-changed",
			message:  "priceChanged",
			sourceID: "yandex/main",
			event: func() (event.Event, error) {
				e := yandex.Entry{
					OperationID: 4240, ClaimID: "3b8d1af142664fde824626a7c19e2bd9", ChangeType: "price_changed",
					UpdatedTS: "2020-01-01T12:10:00+03:00", NewPrice: "25.50", NewCurrency: "RUB", Revision: 5,
					ClientID: "95d010b2471041499b8cb1bfa282692f",
					Raw: json.RawMessage(`{"operation_id":4240,"claim_id":"3b8d1af142664fde824626a7c19e2bd9",` +
						`"change_type":"price_changed","updated_ts":"2020-01-01T12:10:00+03:00","new_price":"25.50",` +
						`"new_currency":"RUB","revision":5,"client_id":"95d010b2471041499b8cb1bfa282692f"}`),
				}
				return yandex.Normalize("main", &e, time.Date(2020, 1, 1, 9, 10, 1, 500_000_000, time.UTC))
			},
		},
		{
			example:  "bts-status-changed",
			message:  "statusChanged",
			sourceID: "bts/tashkent",
			event: func() (event.Event, error) {
				tr := bts.Track{
					OrderID: "7230600", Code: 1100, Name: "Курьер доставляет",
					Raw: json.RawMessage(`{"orderId":7230600,"status":{"code":1100,"name":"Курьер доставляет"}}`),
				}
				return bts.Normalize("tashkent", tr, "", 3, time.Date(2026, 3, 2, 6, 15, 30, 0, time.UTC))
			},
		},
	}
}

// produce publishes events through the real path, an outbox in PostgreSQL
// and the real publisher to an in-process Kafka broker on the default topic,
// and returns the records read back from the topic by another client, by
// ce_id. Each source's rows are committed as one page; the publisher reads
// every outbox row alike, whichever transaction inserted it.
func produce(t *testing.T, events []event.Event, sourceIDs []string) map[string]kafkatest.Record {
	t.Helper()
	ctx := context.Background()
	kc := kafkatest.Start(t)
	store := pgtest.Open(t)
	cfg := publish.DefaultConfig()
	cfg.Brokers = []string{kc.Addr}
	cfg.IdlePoll = 50 * time.Millisecond
	p, err := publish.New(ctx, cfg, store.Outbox, zaptest.NewLogger(t), prometheus.NewRegistry())
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })

	pages := map[string][]outbox.Row{}
	for i, e := range events {
		m, err := e.Message()
		require.NoError(t, err)
		pages[sourceIDs[i]] = append(pages[sourceIDs[i]], outbox.Row{Partition: p.Partition(m.Key), Msg: m})
	}
	for _, src := range slices.Sorted(maps.Keys(pages)) {
		l, ok, err := store.Leases.TryAcquire(ctx, lease.Source(src), "schemas-test", time.Hour)
		require.NoError(t, err)
		require.True(t, ok)
		_, err = store.Cursors.CommitPage(ctx, cursor.Page{Lease: l, SourceID: src, Cursor: "after-" + src, Rows: pages[src]})
		require.NoError(t, err)
	}

	l, ok, err := store.Leases.TryAcquire(ctx, lease.Publisher, "schemas-test", time.Hour)
	require.NoError(t, err)
	require.True(t, ok)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx, lease.NewHeld(l, time.Now(), time.Hour), nil) }()
	p.Notify()
	recs := kafkatest.ReadTopic(t, kc.Addr, cfg.Topic, len(events), 30*time.Second)
	cancel()
	require.NoError(t, <-done)

	byID := map[string]kafkatest.Record{}
	for _, r := range recs {
		byID[r.Header(event.HeaderID)] = r
	}
	require.Len(t, byID, len(events), "one record per event")
	return byID
}

// TestAsyncAPIDescribesProducedRecords takes records the real publisher
// wrote and compares them with the document: the key with the Kafka
// binding's key schema and with the shape internal/event builds, the header
// names with the documented ones (no more, no fewer), every header value and
// the payload with the schemas of the one message that must describe the
// record, and the record with the document's example of it.
func TestAsyncAPIDescribesProducedRecords(t *testing.T) {
	t.Parallel()
	doc := asyncAPIDoc(t)
	messages := compileMessages(t, doc)
	payloadV1, err := schemas.CompileDeliveryEventV1()
	require.NoError(t, err)
	channel := theChannel(t, doc)
	cases := recordCases()

	// Every message and every example of the document is checked against
	// a produced record below, so none is left unverified.
	wantExamples, wantMessages := map[string]bool{}, map[string]bool{}
	for _, tc := range cases {
		wantExamples[tc.message+"/"+tc.example] = true
		wantMessages[tc.message] = true
	}
	examples := map[string]map[string]any{}
	for id := range messages {
		msg := follow(t, doc, channel+"/messages/"+id)
		for _, ex := range pointer(t, doc, msg+"/examples").([]any) {
			ex := ex.(map[string]any)
			examples[id+"/"+ex["name"].(string)] = ex
		}
	}
	require.Equal(t, wantMessages, mapKeys(messages), "the channel's messages are the ones ingestd writes")
	require.Equal(t, wantExamples, mapKeys(examples), "every example is a record ingestd writes")

	// ce_type has the values of the payload's event_type.
	eventTypes := object(t, jsonValue(t, schemas.DeliveryEventV1), "/properties/event_type")["enum"]
	require.ElementsMatch(t, eventTypes,
		object(t, doc, "/components/schemas/deliveryEventHeaders/properties/ce_type")["enum"])

	events := make([]event.Event, len(cases))
	sources := make([]string, len(cases))
	for i, tc := range cases {
		events[i], err = tc.event()
		require.NoError(t, err)
		sources[i] = tc.sourceID
	}
	records := produce(t, events, sources)

	for i, tc := range cases {
		t.Run(tc.example, func(t *testing.T) {
			t.Parallel()
			e := events[i]
			rec, ok := records[e.ID]
			require.True(t, ok, "record of %s", e.ID)
			headers := map[string]any{}
			for k, v := range rec.Headers {
				headers[k] = v
			}
			payload := jsonValue(t, rec.Value)

			// The record matches its message and no other, so a consumer
			// can tell the messages apart by ce_type.
			var matched []string
			for _, id := range slices.Sorted(maps.Keys(messages)) {
				m := messages[id]
				if m.headers.Validate(any(headers)) == nil && m.payload.Validate(payload) == nil {
					matched = append(matched, id)
				}
			}
			m := messages[tc.message]
			require.NoError(t, m.headers.Validate(any(headers)), "headers")
			require.NoError(t, m.payload.Validate(payload), "payload")
			require.Equal(t, []string{tc.message}, matched)
			require.NoError(t, payloadV1.Validate(payload), "payload against delivery-event.v1.json")

			// The key: the binding's schema, and the shape internal/event
			// builds.
			require.NoError(t, m.key.Validate(any(rec.Key)), "key")
			require.Equal(t, e.Provider+":"+e.OrderID, rec.Key)

			// Header names: exactly the documented ones.
			documented := schemaProperties(t, doc, follow(t, doc, channel+"/messages/"+tc.message)+"/headers")
			require.Equal(t, documented, mapKeys(rec.Headers), "documented headers == produced headers")

			// What the descriptions say the headers equal.
			p := payload.(map[string]any)
			require.Equal(t, p["event_id"], rec.Header(event.HeaderID))
			require.Equal(t, p["event_type"], rec.Header(event.HeaderType))
			require.Equal(t, p["order_id"], rec.Header(event.HeaderSubject))
			require.Equal(t, p["occurred_at"], rec.Header(event.HeaderTime))
			require.Equal(t, "/ingestd/"+e.Provider+"/"+e.Account, rec.Header(event.HeaderSource))

			// The example is this record. ingestd_seq and ingestd_epoch
			// depend on the outbox and the lease, so only their presence
			// is compared; the schemas check their values.
			ex := examples[tc.message+"/"+tc.example]
			exPayload, err := json.Marshal(ex["payload"])
			require.NoError(t, err)
			require.JSONEq(t, string(rec.Value), string(exPayload))
			exHeaders := ex["headers"].(map[string]any)
			require.NoError(t, m.headers.Validate(any(exHeaders)), "example headers")
			require.NoError(t, m.payload.Validate(ex["payload"]), "example payload")
			require.Equal(t, mapKeys(rec.Headers), mapKeys(exHeaders))
			for k, v := range rec.Headers {
				if k != publish.HeaderSeq && k != publish.HeaderEpoch {
					require.Equal(t, v, exHeaders[k], "example header %s", k)
				}
			}
		})
	}
}

// mapKeys returns the keys of m as a set.
func mapKeys[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// TestAsyncAPIMatchesPublisherDefaults holds the document's channel to the
// publisher's defaults: the address is the default topic and the Kafka
// binding's partition count the default of a topic ingestd creates, and the
// description names the settings that change either.
func TestAsyncAPIMatchesPublisherDefaults(t *testing.T) {
	t.Parallel()
	doc := asyncAPIDoc(t)
	channel := theChannel(t, doc)
	defaults := publish.DefaultConfig()
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"address is the default topic", pointer(t, doc, channel+"/address"), defaults.Topic},
		{"partitions are the default of a created topic", pointer(t, doc, channel+"/bindings/kafka/partitions"), json.Number(strconv.Itoa(defaults.Partitions))},
		{"the description names INGESTD_KAFKA_TOPIC", strings.Contains(pointer(t, doc, channel+"/description").(string), "`INGESTD_KAFKA_TOPIC`"), true},
		{"the description names INGESTD_KAFKA_PARTITIONS", strings.Contains(pointer(t, doc, channel+"/description").(string), "`INGESTD_KAFKA_PARTITIONS`"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, tc.got)
		})
	}
}

// TestAsyncAPIQuotesAreVerbatim: a blockquote in a description of the
// document (lines starting with ">") quotes docs/guarantees.md or
// docs/events.md, and must do so word for word, so that the document never
// promises more, or less, than the contract does.
func TestAsyncAPIQuotesAreVerbatim(t *testing.T) {
	t.Parallel()
	var sources []string
	for _, p := range []string{"../docs/guarantees.md", "../docs/events.md"} {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		sources = append(sources, strings.Join(strings.Fields(string(b)), " "))
	}
	var quotes []string
	for _, d := range descriptions(asyncAPIDoc(t)) {
		quotes = append(quotes, blockquotes(d)...)
	}
	require.GreaterOrEqual(t, len(quotes), 5, "the delivery promise is quoted")
	for _, q := range quotes {
		t.Run(q[:min(len(q), 60)], func(t *testing.T) {
			t.Parallel()
			found := slices.ContainsFunc(sources, func(s string) bool { return strings.Contains(s, q) })
			require.True(t, found, "%s quotes words that are not in docs/guarantees.md or docs/events.md:\n%s", asyncAPIFile, q)
		})
	}
}

// descriptions returns every "description" string in v, in no order.
func descriptions(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "description" {
				out = append(out, s)
				continue
			}
			out = append(out, descriptions(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, descriptions(x)...)
		}
	}
	return out
}

// blockquotes returns the Markdown blockquotes of s, one per paragraph, with
// the ">" markers removed and whitespace collapsed as it is in the sources.
func blockquotes(s string) []string {
	var out []string
	for para := range strings.SplitSeq(s, "\n\n") {
		lines := strings.Split(strings.TrimSpace(para), "\n")
		if !strings.HasPrefix(lines[0], ">") {
			continue
		}
		for i, l := range lines {
			lines[i] = strings.TrimPrefix(l, ">")
		}
		out = append(out, strings.Join(strings.Fields(strings.Join(lines, " ")), " "))
	}
	return out
}

// TestPayloadSchemaReadsTheSameAsDraft07: asyncapi.yaml references
// delivery-event.v1.json as an AsyncAPI payload schema, which AsyncAPI tools
// read as draft-07, while the file declares draft 2020-12. That is sound
// only while the file uses keywords that mean the same in both, which this
// test holds it to; the cases after the first show what it rejects.
func TestPayloadSchemaReadsTheSameAsDraft07(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(s map[string]any)
		// wantBad is the keyword path that must be reported; empty means
		// none.
		wantBad string
	}{
		{name: "delivery-event.v1.json as committed"},
		{
			name: "prefixItems, which draft-07 does not have",
			mutate: func(s map[string]any) {
				s["properties"].(map[string]any)["tags"] = map[string]any{"type": "array", "prefixItems": []any{map[string]any{"type": "string"}}}
			},
			wantBad: "/properties/tags/prefixItems",
		},
		{
			name: "a $ref with siblings, which draft-07 ignores",
			mutate: func(s map[string]any) {
				s["properties"].(map[string]any)["courier"] = map[string]any{"$ref": "#/$defs/courier", "description": "x"}
			},
			wantBad: "/properties/courier/$ref",
		},
		{
			name: "items as an array, which 2020-12 does not allow",
			mutate: func(s map[string]any) {
				s["properties"].(map[string]any)["tags"] = map[string]any{"type": "array", "items": []any{map[string]any{"type": "string"}}}
			},
			wantBad: "/properties/tags/items",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := jsonValue(t, schemas.DeliveryEventV1).(map[string]any)
			if tc.mutate != nil {
				tc.mutate(s)
			}
			bad := notDraft07Compatible("", s)
			if tc.wantBad == "" {
				require.Empty(t, bad)
				return
			}
			require.Contains(t, bad, tc.wantBad)
		})
	}
}

// sharedKeywords mean the same in draft 2020-12 and draft-07 (and so in the
// AsyncAPI Schema Object). items qualifies only in its single-schema form,
// and $ref only without siblings, which draft-07 ignores.
var sharedKeywords = map[string]bool{
	"$schema": true, "$id": true, "$ref": true, "$comment": true, "$defs": true, "definitions": true,
	"title": true, "description": true, "default": true, "examples": true,
	"type": true, "enum": true, "const": true, "format": true,
	"pattern": true, "minLength": true, "maxLength": true,
	"minimum": true, "maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true, "multipleOf": true,
	"properties": true, "required": true, "additionalProperties": true, "minProperties": true, "maxProperties": true,
	"items": true, "minItems": true, "maxItems": true, "uniqueItems": true,
	"allOf": true, "anyOf": true, "oneOf": true, "not": true,
}

// notDraft07Compatible returns the paths of the keywords under the schema s
// at path that do not read the same in draft-07.
func notDraft07Compatible(path string, s map[string]any) []string {
	var bad []string
	for _, k := range slices.Sorted(maps.Keys(s)) {
		v, at := s[k], path+"/"+k
		switch {
		case !sharedKeywords[k]:
			bad = append(bad, at)
		case k == "$ref" && len(s) > 1:
			bad = append(bad, at)
		case k == "properties" || k == "$defs" || k == "definitions":
			for _, name := range slices.Sorted(maps.Keys(v.(map[string]any))) {
				if sub, ok := v.(map[string]any)[name].(map[string]any); ok {
					bad = append(bad, notDraft07Compatible(at+"/"+name, sub)...)
				}
			}
		case k == "items" || k == "additionalProperties" || k == "not":
			if sub, ok := v.(map[string]any); ok {
				bad = append(bad, notDraft07Compatible(at, sub)...)
			} else if k == "items" {
				bad = append(bad, at)
			}
		case k == "allOf" || k == "anyOf" || k == "oneOf":
			for i, x := range v.([]any) {
				if sub, ok := x.(map[string]any); ok {
					bad = append(bad, notDraft07Compatible(at+"/"+strconv.Itoa(i), sub)...)
				}
			}
		}
	}
	return bad
}
