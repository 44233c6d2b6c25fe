package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSameSeedServesSameBytes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		cfg   YandexConfig
		limit int
	}{
		{"plain", YandexConfig{Seed: 1, Backlog: 3_000}, 1000},
		{"small pages", YandexConfig{Seed: 2, Backlog: 500, Claims: 7}, 37},
		{"awkward journal", YandexConfig{Seed: 3, Backlog: 2_000, UnknownStatusRate: 0.1, BackwardsTimeRate: 0.05}, 250},
		{"replays", YandexConfig{Seed: 4, Backlog: 2_000, ReplayRate: 0.5}, 100},
		{"negative seed", YandexConfig{Seed: -42, Backlog: 800, MaxPageSize: 90}, 1000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			y1, srv1 := newServer(t, tc.cfg)
			y2, srv2 := newServer(t, tc.cfg)
			// Generating the tail first must not change anything: the
			// journal depends on the seed only, not on access order.
			_ = y2.EntryJSON(tc.cfg.Backlog - 1)
			w1 := walk(t, y1, srv1, "", tc.limit)
			w2 := walk(t, y2, srv2, "", tc.limit)
			require.Equal(t, len(w1.bodies), len(w2.bodies))
			for k := range w1.bodies {
				require.Equal(t, string(w1.bodies[k]), string(w2.bodies[k]), "page %d", k)
			}
			for i := range tc.cfg.Backlog {
				require.Equal(t, y1.EntryJSON(i), y2.EntryJSON(i))
			}
		})
	}
}

func TestDifferentSeedsDiffer(t *testing.T) {
	t.Parallel()
	a, err := NewYandex(YandexConfig{Seed: 10, Backlog: 10})
	require.NoError(t, err)
	b, err := NewYandex(YandexConfig{Seed: 11, Backlog: 10})
	require.NoError(t, err)
	require.NotEqual(t, a.EntryJSON(0), b.EntryJSON(0))
	require.NotEqual(t, a.CursorAfter(5), b.CursorAfter(5))
}

func TestFaultRatesDoNotChangeJournal(t *testing.T) {
	t.Parallel()
	plain, err := NewYandex(YandexConfig{Seed: 5, Backlog: 300})
	require.NoError(t, err)
	faulty, err := NewYandex(YandexConfig{Seed: 5, Backlog: 300, ReplayRate: 0.3,
		Faults: FaultRates{TooManyRequests: 0.2, ServerError: 0.2, Malformed: 0.2}})
	require.NoError(t, err)
	for i := range 300 {
		require.Equal(t, plain.EntryJSON(i), faulty.EntryJSON(i))
	}
	require.Equal(t, plain.CursorAfter(123), faulty.CursorAfter(123))
}

// wireEntry mirrors Entry with pointers so that absent and empty differ.
type wireEntry struct {
	OperationID    *int64  `json:"operation_id"`
	ClaimID        *string `json:"claim_id"`
	ChangeType     *string `json:"change_type"`
	UpdatedTS      *string `json:"updated_ts"`
	NewStatus      *string `json:"new_status"`
	NewPrice       *string `json:"new_price"`
	NewCurrency    *string `json:"new_currency"`
	Resolution     *string `json:"resolution"`
	Revision       *int64  `json:"revision"`
	ClientID       *string `json:"client_id"`
	CurrentPointID *int64  `json:"current_point_id"`
}

// documentedFields lists the Event fields of the API document.
func documentedFields() []string {
	return []string{"operation_id", "claim_id", "change_type", "updated_ts", "new_status",
		"new_price", "new_currency", "resolution", "revision", "client_id", "current_point_id"}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestEntryJSONMatchesEntry(t *testing.T) {
	t.Parallel()
	y, err := NewYandex(YandexConfig{Seed: 6, Backlog: 2_000, UnknownStatusRate: 0.05})
	require.NoError(t, err)
	extras := 0
	for i := range y.Total() {
		raw := y.EntryJSON(i)
		e := y.Entry(i)
		var w wireEntry
		require.NoError(t, json.Unmarshal(raw, &w), "%s", raw)
		require.NotNil(t, w.OperationID)
		require.NotNil(t, w.Revision)
		require.Equal(t, e.OperationID, *w.OperationID)
		require.Equal(t, e.ClaimID, deref(w.ClaimID))
		require.Equal(t, e.ChangeType, deref(w.ChangeType))
		require.Equal(t, e.UpdatedTS, deref(w.UpdatedTS))
		require.Equal(t, e.NewStatus, deref(w.NewStatus))
		require.Equal(t, e.NewPrice, deref(w.NewPrice))
		require.Equal(t, e.NewCurrency, deref(w.NewCurrency))
		require.Equal(t, e.Resolution, deref(w.Resolution))
		require.Equal(t, e.Revision, *w.Revision)
		require.Equal(t, e.ClientID, deref(w.ClientID))
		require.Equal(t, e.CurrentPointID, w.CurrentPointID)

		var all map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(raw, &all))
		for _, f := range documentedFields() {
			delete(all, f)
		}
		if len(all) == 0 {
			require.Nil(t, e.Extra)
			continue
		}
		extras++
		require.Equal(t, all, e.Extra)
		for _, v := range e.Extra {
			require.True(t, bytes.Contains(raw, v), "extra value must be served verbatim")
		}
	}
	require.NotZero(t, extras, "some entries must carry an undocumented field")
}

// claimState tracks one claim through the journal.
type claimState struct {
	revision int64
	status   string
	known    string // last documented status
	ended    bool
	client   string
}

// allowedTransitions lists the documented transitions the simulator may take.
func allowedTransitions() map[string][]string {
	return map[string][]string{
		"new":                             {"estimating"},
		"estimating":                      {"ready_for_approval", "estimating_failed"},
		"ready_for_approval":              {"accepted", "cancelled"},
		"accepted":                        {"performer_lookup", "pay_waiting", "cancelled"},
		"pay_waiting":                     {"performer_lookup", "cancelled"},
		"performer_lookup":                {"performer_draft", "performer_not_found", "cancelled"},
		"performer_draft":                 {"performer_found", "performer_lookup"},
		"performer_found":                 {"pickup_arrived", "cancelled", "cancelled_with_payment", "cancelled_by_taxi"},
		"pickup_arrived":                  {"ready_for_pickup_confirmation", "cancelled_with_payment"},
		"ready_for_pickup_confirmation":   {"pickuped", "cancelled_with_payment"},
		"pickuped":                        {"delivery_arrived", "returning", "failed", "cancelled_with_items_on_hands"},
		"delivery_arrived":                {"ready_for_delivery_confirmation", "returning"},
		"ready_for_delivery_confirmation": {"delivered", "returning"},
		"delivered":                       {"delivered_finish"},
		"returning":                       {"return_arrived"},
		"return_arrived":                  {"ready_for_return_confirmation"},
		"ready_for_return_confirmation":   {"returned"},
		"returned":                        {"returned_finish"},
	}
}

// lifecycleChecker validates a journal entry by entry. It reports problems
// as errors rather than through require so that checking tens of thousands
// of entries stays fast.
type lifecycleChecker struct {
	y        *Yandex
	next     map[string][]string
	claims   map[string]*claimState
	seen     map[string]int
	finished int
	prevOp   int64
	hex32    *regexp.Regexp
	price    *regexp.Regexp
	iso      *regexp.Regexp
	name     *regexp.Regexp
}

func newLifecycleChecker(y *Yandex) *lifecycleChecker {
	return &lifecycleChecker{
		y:      y,
		next:   allowedTransitions(),
		claims: map[string]*claimState{},
		seen:   map[string]int{},
		prevOp: math.MinInt64,
		hex32:  regexp.MustCompile(`^[0-9a-f]{32}$`),
		price:  regexp.MustCompile(`^[1-9][0-9]*\.[0-9]{2}$`),
		iso:    regexp.MustCompile(`^2026-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$`),
		name:   regexp.MustCompile(`^[a-z_0-9]+$`),
	}
}

func (lc *lifecycleChecker) check(e Entry) error {
	if e.OperationID <= lc.prevOp {
		return fmt.Errorf("operation_id %d does not increase (previous %d)", e.OperationID, lc.prevOp)
	}
	lc.prevOp = e.OperationID
	switch {
	case !lc.hex32.MatchString(e.ClaimID), !lc.hex32.MatchString(e.ClientID):
		return fmt.Errorf("bad claim_id %q or client_id %q", e.ClaimID, e.ClientID)
	case !lc.iso.MatchString(e.UpdatedTS):
		return fmt.Errorf("bad updated_ts %q", e.UpdatedTS)
	case !lc.name.MatchString(e.NewStatus):
		return fmt.Errorf("bad new_status %q", e.NewStatus)
	case e.ChangeType != "status_changed" && e.ChangeType != "price_changed":
		return fmt.Errorf("bad change_type %q", e.ChangeType)
	case (e.NewPrice != "" || e.NewCurrency != "") && (!lc.price.MatchString(e.NewPrice) || (e.NewCurrency != "RUB" && e.NewCurrency != "KZT")):
		return fmt.Errorf("bad price %q %q", e.NewPrice, e.NewCurrency)
	}
	lc.seen[e.NewStatus]++

	c, ok := lc.claims[e.ClaimID]
	if !ok {
		if e.NewStatus != "new" || e.ChangeType != "status_changed" || e.Revision != 1 {
			return fmt.Errorf("claim %s starts with %s/%s revision %d", e.ClaimID, e.ChangeType, e.NewStatus, e.Revision)
		}
		lc.claims[e.ClaimID] = &claimState{revision: 1, status: "new", known: "new", client: e.ClientID}
		return nil
	}
	switch {
	case c.ended:
		return fmt.Errorf("claim %s continues after a terminal status", e.ClaimID)
	case e.Revision != c.revision+1:
		return fmt.Errorf("claim %s revision %d follows %d", e.ClaimID, e.Revision, c.revision)
	case e.ClientID != c.client:
		return fmt.Errorf("claim %s changed account", e.ClaimID)
	}
	c.revision = e.Revision
	wantResolution := ""
	switch {
	case e.ChangeType == "price_changed":
		if e.NewStatus != c.status || e.NewPrice == "" {
			return fmt.Errorf("price_changed must repeat status %s and carry a price: %+v", c.status, e)
		}
	case lc.y.IsUnknownStatus(e.NewStatus):
		c.status = e.NewStatus
	default:
		if !slices.Contains(lc.next[c.known], e.NewStatus) {
			return fmt.Errorf("claim %s: %s after %s", e.ClaimID, e.NewStatus, c.known)
		}
		c.status, c.known = e.NewStatus, e.NewStatus
		if _, more := lc.next[e.NewStatus]; !more {
			c.ended = true
			lc.finished++
			wantResolution = "failed"
			if e.NewStatus == "delivered_finish" {
				wantResolution = "success"
			}
		}
	}
	if e.Resolution != wantResolution {
		return fmt.Errorf("claim %s status %s: resolution %q, want %q", e.ClaimID, e.NewStatus, e.Resolution, wantResolution)
	}
	return nil
}

func TestLifecyclesAreValid(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  YandexConfig
	}{
		{"one claim at a time", YandexConfig{Seed: 7, Backlog: 20_000, Claims: 1}},
		{"interleaved", YandexConfig{Seed: 8, Backlog: 30_000, Claims: 40}},
		{"default width with detours", YandexConfig{Seed: 9, Backlog: 30_000, UnknownStatusRate: 0.05}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			y, err := NewYandex(tc.cfg)
			require.NoError(t, err)
			lc := newLifecycleChecker(y)
			for i := range y.Total() {
				if err := lc.check(y.Entry(i)); err != nil {
					t.Fatalf("entry %d: %v", i, err)
				}
			}
			require.Greater(t, lc.finished, len(lc.claims)/3, "most claims finish")
			for _, s := range []string{"delivered_finish", "returned_finish", "cancelled", "cancelled_by_taxi",
				"cancelled_with_payment", "estimating_failed", "failed", "pay_waiting", "performer_not_found"} {
				require.NotZero(t, lc.seen[s], "status %s never appears", s)
			}
			t.Logf("%d entries, %d claims, %d finished", y.Total(), len(lc.claims), lc.finished)
		})
	}
}

func TestJournalRates(t *testing.T) {
	t.Parallel()
	const n = 25_000
	cases := []struct {
		unknown, backwards float64
	}{
		{0, 0},
		{0.02, 0.01},
		{0.2, 0.1},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("unknown=%v/backwards=%v", tc.unknown, tc.backwards), func(t *testing.T) {
			t.Parallel()
			y, err := NewYandex(YandexConfig{Seed: 12, Backlog: n, UnknownStatusRate: tc.unknown, BackwardsTimeRate: tc.backwards})
			require.NoError(t, err)
			var statusChanges, unknown, backwards, hugePoints, absentPoints int
			var prev time.Time
			for i := range n {
				e := y.Entry(i)
				ts, err := time.Parse(time.RFC3339Nano, e.UpdatedTS)
				require.NoError(t, err)
				if i > 0 && ts.Before(prev) {
					backwards++
				}
				prev = ts
				if e.ChangeType == "status_changed" && e.NewStatus != "new" {
					statusChanges++
					if y.IsUnknownStatus(e.NewStatus) {
						unknown++
					}
				}
				switch {
				case e.CurrentPointID == nil:
					absentPoints++
				case *e.CurrentPointID > 1<<53:
					hugePoints++
				}
			}
			requireRate(t, "unknown statuses", unknown, statusChanges, tc.unknown)
			requireRate(t, "backwards timestamps", backwards, n, tc.backwards)
			require.NotZero(t, hugePoints, "some point ids must exceed float64 precision")
			require.NotZero(t, absentPoints, "some entries must omit current_point_id")
		})
	}
}

// requireRate checks that got/of is close to want, exactly zero when want is.
func requireRate(t *testing.T, what string, got, of int, want float64) {
	t.Helper()
	if want == 0 {
		require.Zero(t, got, what)
		return
	}
	rate := float64(got) / float64(of)
	require.InDelta(t, want, rate, want*0.25+0.002, "%s: %d of %d", what, got, of)
}

func TestStatusEnum(t *testing.T) {
	t.Parallel()
	y, err := NewYandex(YandexConfig{Backlog: 1})
	require.NoError(t, err)
	statuses := YandexStatuses()
	require.Len(t, statuses, 27)
	require.Contains(t, statuses, "pay_waiting")
	require.Contains(t, statuses, "cancelled_with_items_on_hands")
	for _, s := range statuses {
		require.False(t, y.IsUnknownStatus(s), s)
	}
	for _, s := range []string{"teleported_v2", "batched_v3", "", "NEW", "delivered "} {
		require.True(t, y.IsUnknownStatus(s), s)
	}
	statuses[0] = "mutated"
	require.Equal(t, "new", YandexStatuses()[0], "callers get a fresh slice")
}

func TestJournalPrefixDoesNotDependOnSize(t *testing.T) {
	t.Parallel()
	small, err := NewYandex(YandexConfig{Seed: 13, Claims: 30, Backlog: 500})
	require.NoError(t, err)
	big, err := NewYandex(YandexConfig{Seed: 13, Claims: 30, Backlog: 100, Rate: 50, MaxEntries: 1_000_000})
	require.NoError(t, err)
	for i := range 500 {
		require.Equal(t, small.EntryJSON(i), big.EntryJSON(i))
	}
	require.Equal(t, small.CursorAfter(500), big.CursorAfter(500))
}
