package yandex

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// referenceDecode is decodePage written the slow, obvious way with
// encoding/json, as an oracle: maps keep keys exact and the last duplicate,
// and each field is decoded by encoding/json itself.
func referenceDecode(body []byte) (*Page, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, err
	}
	var cursor string
	if raw, ok := top["cursor"]; ok {
		if err := json.Unmarshal(raw, &cursor); err != nil {
			return nil, err
		}
		if !utf8.Valid(raw) || (strings.ContainsRune(cursor, utf8.RuneError) &&
			!bytes.Contains(raw, []byte("\uFFFD")) && !bytes.Contains(bytes.ToLower(raw), []byte(`\ufffd`))) {
			return nil, errors.New("cursor would not round-trip")
		}
	}
	if cursor == "" {
		return nil, errors.New("no cursor")
	}
	eventsRaw, ok := top["events"]
	if !ok || string(eventsRaw) == "null" {
		return nil, errors.New("no events")
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(eventsRaw, &raws); err != nil {
		return nil, err
	}
	entries := make([]Entry, 0, len(raws))
	for _, raw := range raws {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil {
			return nil, err
		}
		// encoding/json checked the whole body, raw included.
		e := Entry{Raw: raw, rawChecked: true}
		decode := func(key string, dst any) error {
			if v, ok := fields[key]; ok {
				return json.Unmarshal(v, dst)
			}
			return nil
		}
		var op *int64
		if err := errors.Join(
			decode("operation_id", &op),
			decode("claim_id", &e.ClaimID),
			decode("change_type", &e.ChangeType),
			decode("updated_ts", &e.UpdatedTS),
			decode("new_status", &e.NewStatus),
			decode("new_currency", &e.NewCurrency),
			decode("resolution", &e.Resolution),
			decode("revision", &e.Revision),
			decode("client_id", &e.ClientID),
			decode("current_point_id", &e.CurrentPointID),
		); err != nil {
			return nil, err
		}
		if v, ok := fields["new_price"]; ok {
			if c := v[0]; c == '-' || (c >= '0' && c <= '9') {
				e.NewPrice = string(v)
			} else if err := json.Unmarshal(v, &e.NewPrice); err != nil {
				return nil, err
			}
		}
		if e.ClaimID == "" || op == nil {
			return nil, errors.New("entry lacks claim_id or operation_id")
		}
		e.OperationID = *op
		entries = append(entries, e)
	}
	return &Page{Cursor: cursor, Entries: entries, Bytes: len(body)}, nil
}

// requireSameAsReference checks decodePage against referenceDecode. With
// duplicate keys decodePage checks every occurrence while the reference
// only sees the last, so there decodePage may reject what the reference
// accepts, but what it accepts must still agree.
func requireSameAsReference(t *testing.T, body []byte) {
	t.Helper()
	got, err := decodePage(body, 0)
	want, refErr := referenceDecode(body)
	if refErr != nil {
		require.Error(t, err, "reference rejects the body: %v", refErr)
		require.Nil(t, got)
		return
	}
	if err != nil && hasDuplicateKeys(body) {
		return
	}
	require.NoError(t, err)
	require.Equal(t, want.Cursor, got.Cursor)
	require.Equal(t, want.Bytes, got.Bytes)
	require.Len(t, got.Entries, len(want.Entries))
	for i := range want.Entries {
		require.Equal(t, want.Entries[i], got.Entries[i], "entry %d", i)
	}
}

// hasDuplicateKeys reports whether any object in the valid JSON body has a
// key twice.
func hasDuplicateKeys(body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	// Each open container has an entry: the keys seen (nil for arrays) and
	// whether the next token of an object is a key.
	type frame struct {
		keys      map[string]bool
		expectKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.keys != nil && top.expectKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			key := tok.(string)
			if top.keys[key] {
				return true
			}
			top.keys[key] = true
			top.expectKey = false
			continue
		}
		if top != nil && top.keys != nil {
			top.expectKey = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, expectKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}

// decodeSeeds are bodies that exercise the parser's corners.
func decodeSeeds() []string {
	seeds := []string{
		`{"cursor":"x","events":[]}`,
		` { "events" : [ ] , "cursor" : "x" } `,
		`{"cursor":"x","events":[{"operation_id":-9223372036854775808,"claim_id":"c","revision":9223372036854775807}]}`,
		`{"cursor":"x","events":[{"operation_id":-0,"claim_id":"c","current_point_id":0}]}`,
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"c","new_price":20.50}]}`,
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"c","new_price":-1e5}]}`,
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"c","new_price":null,"new_status":null,"revision":null}]}`,
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"c","current_point_id":5,"current_point_id":null}]}`,
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"a","claim_id":"b"}],"events":[]}`,
		`{"cursor":"a","cursor":"b","events":[]}`,
		`{"cur\u0073or":"esc","events":[{"operation_\u0069d":1,"claim_id":"\u0063\"\\\/\b\f\n\r\t"}]}`,
		`{"cursor":"\ud83d\ude00 \uFFFD","events":[]}`,
		"{\"cursor\":\"x\",\"events\":[{\"operation_id\":1,\"claim_id\":\"bad\xff\xfeutf8\"}]}",
		"{\"cursor\":\"\xef\xbf\xbd\",\"events\":[]}",
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"c","x":[[[{"}":"]"}]]],"y":"\"}"}]}`,
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"c","CLAIM_ID":"upper"}]}`,
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"c","revision":1.0}]}`,
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"c","resolution":true}]}`,
		`{"cursor":"x","events":[{}]}`,
		`null`,
		`{"cursor":"x","events":[],"events":null}`,
		`{"cursor":"0","events":[{}],"events":[]}`,
		`{"cursor":"x","events":[` + "\n\t" + `{"operation_id":1,"claim_id":"c"}` + "\r\n" + `]}`,
		string(journalBody(5)),
		// Syntax that encoding/json rejects.
		`{"cursor":"x","events":[],}`,
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"c"},]}`,
		`{"cursor":"x","events":[],"a":[1,]}`,
		`{"cursor":"x","events":[],"a":[,1]}`,
		`{"cursor":"x","events":[],"a":{"b":1,}}`,
		`{"cursor":"x","events":[],"a":01}`,
		`{"cursor":"x","events":[],"a":1.}`,
		`{"cursor":"x","events":[],"a":1e}`,
		`{"cursor":"x","events":[],"a":+1}`,
		`{"cursor":"x","events":[],"a":-}`,
		`{"cursor":"x","events":[],"a":.5}`,
		`{"cursor":"x","events":[],"a":tru}`,
		`{"cursor":"x","events":[],"a":nul}`,
		`{"cursor":"x","events":[],"a":nullx}`,
		`{"cursor":"x","events":[],"a":"\x"}`,
		`{"cursor":"x","events":[],"a":"\u12G4"}`,
		`{"cursor":"x","events":[],"a":"\u12"}`,
		"{\"cursor\":\"x\",\"events\":[],\"a\":\"tab\there\"}",
		"\xef\xbb\xbf{\"cursor\":\"x\",\"events\":[]}",
		`{"cursor":"x","events":[{"operation_id":01,"claim_id":"c"}]}`,
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"c","revision":-}]}`,
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"c","new_price":1.}]}`,
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"c","resolution":nul}]}`,
		`{"cursor":"x" "events":[]}`,
		`{"cursor":"x","events":[] "a":1}`,
		`{"cursor" "x","events":[]}`,
		`{"cursor":"x","events":[{"operation_id":1 "claim_id":"c"}]}`,
		`{"cursor":"x","events":[{"operation_id":1,"claim_id":"c"} {}]}`,
		`{"cursor":"x","events":[],"a":[1 2]}`,
		`{"cursor":"x","events":[],"a":{"b" 1}}`,
		`{"cursor":"x","events":[],"a":{1:1}}`,
		`{"cursor":"x","events":[],"a":]}`,
		`{"cursor":"x","events":[]}}`,
		`{"cursor":"x","events":[]`,
		`{"cursor":"x","events":[],"a":"`,
		`{"cursor":"x","events":[],"a":"\`,
		`[1,2]`,
		`1 2`,
		` `,
		// The nesting limit, at and just over it.
		`{"cursor":"x","events":[],"a":` + strings.Repeat("[", maxDepth-1) + strings.Repeat("]", maxDepth-1) + `}`,
		`{"cursor":"x","events":[],"a":` + strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth) + `}`,
		`{"cursor":"x","events":[],"a":` + strings.Repeat(`{"a":`, maxDepth) + "1" + strings.Repeat("}", maxDepth) + `}`,
	}
	for _, m := range malformedCases() {
		seeds = append(seeds, m.body)
	}
	return seeds
}

func TestDecodePageMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, seed := range decodeSeeds() {
		t.Run(seed[:min(len(seed), 60)], func(t *testing.T) {
			t.Parallel()
			requireSameAsReference(t, []byte(seed))
		})
	}
}

func TestDecodePageValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want Entry
	}{
		{
			name: "int64 extremes",
			body: `{"operation_id":-9223372036854775808,"claim_id":"c","revision":9223372036854775807}`,
			want: Entry{OperationID: -1 << 63, ClaimID: "c", Revision: 1<<63 - 1},
		},
		{
			name: "numeric price keeps its text",
			body: `{"operation_id":1,"claim_id":"c","new_price":20.50}`,
			want: Entry{OperationID: 1, ClaimID: "c", NewPrice: "20.50"},
		},
		{
			name: "escapes",
			body: `{"operation_id":1,"claim_id":"a\"b\\c\u0416\n"}`,
			want: Entry{OperationID: 1, ClaimID: "a\"b\\cЖ\n"},
		},
		{
			name: "last duplicate wins",
			body: `{"operation_id":1,"operation_id":2,"claim_id":"a","claim_id":"b"}`,
			want: Entry{OperationID: 2, ClaimID: "b"},
		},
		{
			name: "keys match exactly",
			body: `{"operation_id":1,"claim_id":"c","New_Status":"new"}`,
			want: Entry{OperationID: 1, ClaimID: "c"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			page, err := decodePage([]byte(`{"cursor":"x","events":[`+tc.body+`]}`), 1)
			require.NoError(t, err)
			require.Len(t, page.Entries, 1)
			tc.want.Raw = json.RawMessage(tc.body)
			tc.want.rawChecked = true
			require.Equal(t, tc.want, page.Entries[0])
		})
	}
}

func TestDecodePageRawCannotClobberBody(t *testing.T) {
	t.Parallel()
	body := []byte(`{"cursor":"x","events":[{"operation_id":1,"claim_id":"a"},{"operation_id":2,"claim_id":"b"}]}`)
	page, err := decodePage(body, 2)
	require.NoError(t, err)
	// Raw aliases the body; its capacity ends with the entry so that an
	// append by a consumer copies instead of overwriting the next entry.
	_ = append(page.Entries[0].Raw, "XXXX"...)
	require.Equal(t, `{"operation_id":2,"claim_id":"b"}`, string(page.Entries[1].Raw))
}

func FuzzDecodePage(f *testing.F) {
	for _, seed := range decodeSeeds() {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		requireSameAsReference(t, body)
	})
}

// baselineDecode is the straightforward encoding/json decoder that
// decodePage replaces, kept to measure the difference.
func baselineDecode(body []byte) (*Page, error) {
	var top struct {
		Cursor string            `json:"cursor"`
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, err
	}
	entries := make([]Entry, len(top.Events))
	for i, raw := range top.Events {
		var w struct {
			OperationID    *int64 `json:"operation_id"`
			ClaimID        string `json:"claim_id"`
			ChangeType     string `json:"change_type"`
			UpdatedTS      string `json:"updated_ts"`
			NewStatus      string `json:"new_status"`
			NewPrice       string `json:"new_price"`
			NewCurrency    string `json:"new_currency"`
			Resolution     string `json:"resolution"`
			Revision       int64  `json:"revision"`
			ClientID       string `json:"client_id"`
			CurrentPointID *int64 `json:"current_point_id"`
		}
		if err := json.Unmarshal(raw, &w); err != nil {
			return nil, err
		}
		if w.OperationID == nil || w.ClaimID == "" {
			return nil, errors.New("entry lacks claim_id or operation_id")
		}
		entries[i] = Entry{
			OperationID: *w.OperationID, ClaimID: w.ClaimID, ChangeType: w.ChangeType, UpdatedTS: w.UpdatedTS,
			NewStatus: w.NewStatus, NewPrice: w.NewPrice, NewCurrency: w.NewCurrency, Resolution: w.Resolution,
			Revision: w.Revision, ClientID: w.ClientID, CurrentPointID: w.CurrentPointID, Raw: raw, rawChecked: true,
		}
	}
	return &Page{Cursor: top.Cursor, Entries: entries, Bytes: len(body)}, nil
}

func TestBaselineDecodeAgrees(t *testing.T) {
	t.Parallel()
	// The benchmark compares like with like only if both decoders agree.
	body := journalBody(100)
	got, err := decodePage(body, 100)
	require.NoError(t, err)
	want, err := baselineDecode(body)
	require.NoError(t, err)
	require.NotNil(t, got.Strings())
	got.strs = nil // where the strings are kept is not part of the result
	require.Equal(t, want, got)
}

func BenchmarkJournalDecode(b *testing.B) {
	const entries = 1000
	body := journalBody(entries)
	for _, bc := range []struct {
		name   string
		decode func([]byte) (*Page, error)
	}{
		{"parser", func(body []byte) (*Page, error) { return decodePage(body, entries) }},
		{"encoding_json_baseline", baselineDecode},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				page, err := bc.decode(body)
				if err != nil || len(page.Entries) != entries {
					b.Fatalf("decode: %v", err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*entries), "ns/entry")
		})
	}
}
