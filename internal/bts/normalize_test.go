package bts

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/event"
)

func TestNormalize(t *testing.T) {
	t.Parallel()
	observed := time.Date(2026, 3, 1, 14, 30, 7, 250_000_000, time.FixedZone("UZT", 5*3600))
	tests := []struct {
		name         string
		track        Track
		dictName     string
		changeCount  int64
		wantStatus   event.Status
		wantTerminal bool
		wantName     string
	}{
		{name: "dictionary name wins", track: Track{OrderID: "11950975", Code: 800, Name: "Yetkazib berish ofisida"}, dictName: "В офисе доставки",
			changeCount: 3, wantStatus: event.StatusAtDeliveryOffice, wantName: "В офисе доставки"},
		{name: "track name without dictionary", track: Track{OrderID: "11950975", Code: 1200, Name: "Доставлен"},
			changeCount: 7, wantStatus: event.StatusDelivered, wantTerminal: true, wantName: "Доставлен"},
		{name: "cancelled order", track: Track{OrderID: "4293646", Code: 0, Name: "Cancelled Order"},
			changeCount: 2, wantStatus: event.StatusCancelled, wantTerminal: true, wantName: "Cancelled Order"},
		{name: "undefined code", track: Track{OrderID: "4293646", Code: 1000},
			changeCount: 1, wantStatus: event.StatusUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.track.Raw = json.RawMessage(`{"orderId":` + tc.track.OrderID + `,"status":{"code":1}}`)
			ev, err := Normalize("shop", tc.track, tc.dictName, tc.changeCount, observed)
			require.NoError(t, err)
			require.Equal(t, event.TypeStatusChanged, ev.Type)
			require.Equal(t, "bts", ev.Provider)
			require.Equal(t, "shop", ev.Account)
			require.Equal(t, tc.track.OrderID, ev.OrderID)
			require.Equal(t, "bts:"+tc.track.OrderID, ev.Key())
			require.Equal(t, tc.wantStatus, ev.Status)
			require.Equal(t, tc.wantTerminal, ev.Terminal)
			require.Equal(t, tc.wantName, ev.ProviderStatusName)
			require.Equal(t, tc.changeCount, ev.Revision)
			require.Equal(t, observed.UTC(), ev.OccurredAt, "BTS reports no change time")
			require.Equal(t, observed.UTC(), ev.ObservedAt)
			require.Equal(t, tc.track.Raw, ev.Raw)
			require.NoError(t, ev.Validate())
			msg, err := ev.Message()
			require.NoError(t, err)
			require.Equal(t, "/ingestd/bts/shop", msg.Source)
		})
	}
}

func TestNormalizeProviderStatusAndID(t *testing.T) {
	t.Parallel()
	at := time.Unix(1767225600, 0)
	tr := Track{OrderID: "4293646", Code: 0, Raw: json.RawMessage(`{}`)}
	ev, err := Normalize("default", tr, "", 2, at)
	require.NoError(t, err)
	require.Equal(t, "0", ev.ProviderStatus, "a cancelled order's provider status is the code 0, not empty")
	require.Equal(t, event.ID("bts", "default", "4293646", "0", "2"), ev.ID)

	again, err := Normalize("default", tr, "other name", 2, at.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, ev.ID, again.ID, "the same change recorded twice has the same id")
	later, err := Normalize("default", tr, "", 3, at)
	require.NoError(t, err)
	require.NotEqual(t, ev.ID, later.ID, "a status the order returns to later is a new event")
}

func TestNormalizeRejects(t *testing.T) {
	t.Parallel()
	at := time.Now()
	_, err := Normalize("a", Track{Code: 100}, "", 1, at)
	require.ErrorContains(t, err, "empty order id")
	_, err = Normalize("a", Track{OrderID: "1", Code: 100}, "", 0, at)
	require.ErrorContains(t, err, "change count 0")
	_, err = Normalize("a", Track{OrderID: "1", Code: 100}, "", 1, time.Time{})
	require.ErrorContains(t, err, "zero observation time")
}
