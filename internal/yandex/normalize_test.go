package yandex

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/race"
)

func TestNormalize(t *testing.T) {
	t.Parallel()
	observed := time.Date(2026, 3, 1, 15, 4, 5, 6, time.FixedZone("MSK", 3*3600))
	point := int64(372036854775807)
	raw := json.RawMessage(`{"operation_id":17,"claim_id":"3b8d","unknown":{"x":1}}`)

	// base is the documented example entry.
	base := func() Entry {
		return Entry{
			OperationID:    17,
			ClaimID:        "3b8d1af142664fde824626a7c19e2bd9",
			ChangeType:     "status_changed",
			UpdatedTS:      "2020-01-01T03:00:00+03:00",
			NewStatus:      "delivered_finish",
			Resolution:     "success",
			Revision:       4,
			ClientID:       "95d010b2471041499b8cb1bfa282692f",
			CurrentPointID: &point,
			Raw:            raw,
		}
	}
	// want is the event for base; rows adjust it.
	want := func(e Entry) event.Event {
		return event.Event{
			ID: event.ID("yandex", "shop-1", e.ClaimID, strconv.FormatInt(e.OperationID, 10),
				e.ChangeType, strconv.FormatInt(e.Revision, 10)),
			Type:           event.TypeStatusChanged,
			Provider:       "yandex",
			Account:        "shop-1",
			OrderID:        e.ClaimID,
			Status:         event.StatusDelivered,
			ProviderStatus: "delivered_finish",
			Terminal:       true,
			Resolution:     "success",
			Revision:       4,
			OccurredAt:     time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
			ObservedAt:     observed.UTC(),
			PointID:        &point,
			Raw:            raw,
		}
	}

	tests := []struct {
		name    string
		entry   func(*Entry)
		want    func(*event.Event)
		wantErr string
	}{
		{name: "terminal status change", entry: func(*Entry) {}, want: func(*event.Event) {}},
		{
			name:  "non-terminal status with fractional Z time",
			entry: func(e *Entry) { e.NewStatus, e.Resolution, e.UpdatedTS = "pickuped", "", "2026-05-06T07:08:09.123456Z" },
			want: func(ev *event.Event) {
				ev.Status, ev.ProviderStatus, ev.Terminal, ev.Resolution = event.StatusPickedUp, "pickuped", false, ""
				ev.OccurredAt = time.Date(2026, 5, 6, 7, 8, 9, 123456000, time.UTC)
			},
		},
		{
			name: "price change without status",
			entry: func(e *Entry) {
				e.ChangeType, e.NewStatus, e.Resolution, e.NewPrice, e.NewCurrency = "price_changed", "", "", "1250.50", "RUB"
				e.CurrentPointID = nil
			},
			want: func(ev *event.Event) {
				ev.Type = event.TypePriceChanged
				ev.Status, ev.ProviderStatus, ev.Terminal, ev.Resolution = "", "", false, ""
				ev.Price = &event.Price{Amount: "1250.50", Currency: "RUB"}
				ev.PointID = nil
			},
		},
		{
			name:  "negative integer price",
			entry: func(e *Entry) { e.NewPrice, e.NewCurrency = "-5", "KZT" },
			want:  func(ev *event.Event) { ev.Price = &event.Price{Amount: "-5", Currency: "KZT"} },
		},
		{
			name:  "unknown status is published as unknown",
			entry: func(e *Entry) { e.NewStatus, e.Resolution = "teleported", "" },
			want: func(ev *event.Event) {
				ev.Status, ev.ProviderStatus, ev.Terminal, ev.Resolution = event.StatusUnknown, "teleported", false, ""
			},
		},
		{
			name:  "empty status has a null status, not unknown",
			entry: func(e *Entry) { e.NewStatus, e.Resolution = "", "" },
			want: func(ev *event.Event) {
				ev.Status, ev.ProviderStatus, ev.Terminal, ev.Resolution = "", "", false, ""
			},
		},
		{
			name:  "unknown change type is a status change",
			entry: func(e *Entry) { e.ChangeType = "route_changed" },
			want:  func(*event.Event) {},
		},
		{name: "bad timestamp", entry: func(e *Entry) { e.UpdatedTS = "2020-01-01 00:00:00" },
			wantErr: `normalize claim 3b8d1af142664fde824626a7c19e2bd9 op 17: parse updated_ts "2020-01-01 00:00:00"`},
		{name: "timestamp without zone", entry: func(e *Entry) { e.UpdatedTS = "2020-01-01T00:00:00" },
			wantErr: "parse updated_ts"},
		{name: "empty timestamp", entry: func(e *Entry) { e.UpdatedTS = "" }, wantErr: `parse updated_ts ""`},
		{name: "comma price", entry: func(e *Entry) { e.NewPrice = "20,00" },
			wantErr: `normalize claim 3b8d1af142664fde824626a7c19e2bd9 op 17: new_price "20,00" is not a decimal number`},
		{name: "exponent price", entry: func(e *Entry) { e.NewPrice = "1e5" }, wantErr: "is not a decimal"},
		{name: "price without digits after point", entry: func(e *Entry) { e.NewPrice = "20." }, wantErr: "is not a decimal"},
		{name: "price without integer part", entry: func(e *Entry) { e.NewPrice = ".5" }, wantErr: "is not a decimal"},
		{name: "price with plus", entry: func(e *Entry) { e.NewPrice = "+5" }, wantErr: "is not a decimal"},
		{name: "lone minus price", entry: func(e *Entry) { e.NewPrice = "-" }, wantErr: "is not a decimal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := base()
			tc.entry(&e)
			got, err := Normalize("shop-1", &e, observed)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			w := want(e)
			tc.want(&w)
			require.Equal(t, w, got)
			require.Equal(t, time.UTC, got.OccurredAt.Location())
			require.Equal(t, time.UTC, got.ObservedAt.Location())
		})
	}
}

func TestNormalizeIDIdentifiesTheChange(t *testing.T) {
	t.Parallel()
	e := Entry{OperationID: 1, ClaimID: "c", ChangeType: "status_changed", UpdatedTS: "2020-01-01T00:00:00Z", Revision: 1}
	first, err := Normalize("a", &e, time.Now())
	require.NoError(t, err)
	again, err := Normalize("a", &e, time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, first.ID, again.ID, "a change read twice keeps its ID")

	seen := map[string]string{first.ID: "base"}
	for name, mutate := range map[string]func(*Entry, *string){
		"operation": func(e *Entry, _ *string) { e.OperationID = 2 },
		"claim":     func(e *Entry, _ *string) { e.ClaimID = "d" },
		"type":      func(e *Entry, _ *string) { e.ChangeType = "price_changed" },
		"revision":  func(e *Entry, _ *string) { e.Revision = 2 },
		"account":   func(_ *Entry, account *string) { *account = "b" },
	} {
		e2, account := e, "a"
		mutate(&e2, &account)
		ev, err := Normalize(account, &e2, time.Now())
		require.NoError(t, err)
		require.NotContains(t, seen, ev.ID, "changing the %s must change the ID", name)
		seen[ev.ID] = name
	}
}

func TestNormalizeDecodedPage(t *testing.T) {
	t.Parallel()
	page, err := decodePage(journalBody(50), 50)
	require.NoError(t, err)
	for i := range page.Entries {
		ev, err := Normalize("default", &page.Entries[i], time.Now())
		require.NoError(t, err)
		require.Equal(t, page.Entries[i].ClaimID, ev.OrderID)
		require.JSONEq(t, string(page.Entries[i].Raw), string(ev.Raw))
	}
}

func BenchmarkNormalize(b *testing.B) {
	page, err := decodePage(journalBody(1000), 1000)
	if err != nil {
		b.Fatal(err)
	}
	observed := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := Normalize("default", &page.Entries[i%len(page.Entries)], observed); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestOnlyDecodedRawIsTrusted: entries from the page decoder carry a Raw
// the decoder checked, so encoding does not scan it again; an Entry built
// any other way is checked when encoded.
func TestOnlyDecodedRawIsTrusted(t *testing.T) {
	t.Parallel()
	page, err := decodePage([]byte(`{"cursor":"c","events":[{"operation_id":1,"claim_id":"a","change_type":"status_changed","updated_ts":"2026-01-01T00:00:00+00:00","new_status":"new","revision":1}]}`), 1)
	require.NoError(t, err)
	ev, err := Normalize("default", &page.Entries[0], time.Now())
	require.NoError(t, err)
	require.True(t, ev.RawChecked)

	built := page.Entries[0]
	built.rawChecked = false
	built.Raw = []byte(`{"operation_id":1,`)
	ev, err = Normalize("default", &built, time.Now())
	require.NoError(t, err)
	require.False(t, ev.RawChecked)
	_, err = ev.Message()
	require.ErrorContains(t, err, "raw")
}

// pageMessages decodes body and builds the message of every entry the way
// the journal poller does: with the page's arena.
func pageMessages(body []byte, hint int, observed time.Time, msgs []event.Message) ([]event.Message, error) {
	page, err := decodePage(body, hint)
	if err != nil {
		return nil, err
	}
	msgs = msgs[:0]
	for i := range page.Entries {
		ev, err := NormalizeIn(page.Strings(), "default", &page.Entries[i], observed)
		if err != nil {
			return nil, err
		}
		m, err := ev.MessageIn(page.Strings())
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// TestPageAllocatesPayloadsOnly: from body to messages, a page allocates
// one payload per event and a bounded number of blocks per page, nothing
// else per event. The messages are the same as without an arena.
func TestPageAllocatesPayloadsOnly(t *testing.T) {
	const entries = 1000
	body := journalBody(entries)
	observed := time.Date(2026, 3, 1, 15, 4, 5, 0, time.UTC)
	msgs, err := pageMessages(body, entries, observed, nil)
	require.NoError(t, err)
	require.Len(t, msgs, entries)

	plain, err := decodePage(body, entries)
	require.NoError(t, err)
	for i := range plain.Entries {
		ev, err := Normalize("default", &plain.Entries[i], observed)
		require.NoError(t, err)
		want, err := ev.Message()
		require.NoError(t, err)
		require.Equal(t, want, msgs[i], "entry %d", i)
	}

	if race.Enabled {
		t.Skip("allocation counts are only meaningful without -race")
	}
	allocs := testing.AllocsPerRun(5, func() {
		if msgs, err = pageMessages(body, entries, observed, msgs); err != nil {
			panic(err)
		}
	})
	// The fixed part: the page, its entry slice, point chunks, interned
	// values and arena blocks, about 30 in all.
	const perPage = 48
	t.Logf("%.0f allocations for %d events", allocs, entries)
	require.LessOrEqual(t, allocs, float64(entries+perPage))
}

func BenchmarkPageMessages(b *testing.B) {
	const entries = 1000
	body := journalBody(entries)
	observed := time.Now()
	msgs := make([]event.Message, 0, entries)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if msgs, err = pageMessages(body, entries, observed, msgs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*entries), "ns/entry")
	b.ReportMetric(float64(testing.AllocsPerRun(1, func() { _, _ = pageMessages(body, entries, observed, msgs) }))/entries, "allocs/entry")
}
