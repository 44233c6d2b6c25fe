package event

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// yandexDocStatuses is the ClaimStatus enum exactly as the journal
// documentation lists it (/work/shared/upstream/yandex-claims-journal.txt),
// followed by pay_waiting, which Yandex sends although the enum omits it.
func yandexDocStatuses() []string {
	return []string{
		"new", "estimating", "estimating_failed", "ready_for_approval", "accepted",
		"performer_lookup", "performer_draft", "performer_found", "performer_not_found",
		"pickup_arrived", "ready_for_pickup_confirmation", "pickuped", "delivery_arrived",
		"ready_for_delivery_confirmation", "delivered", "delivered_finish", "returning",
		"return_arrived", "ready_for_return_confirmation", "returned", "returned_finish",
		"failed", "cancelled", "cancelled_with_payment", "cancelled_by_taxi",
		"cancelled_with_items_on_hands",
		"pay_waiting",
	}
}

func TestStatusesAreValidAndDistinct(t *testing.T) {
	t.Parallel()
	all := Statuses()
	require.Len(t, all, 16)
	require.Equal(t, StatusCreated, all[0], "order must follow event.go")
	require.Equal(t, StatusUnknown, all[15], "order must follow event.go")
	seen := map[Status]bool{}
	for _, s := range all {
		require.True(t, s.Valid(), "%q", s)
		require.False(t, seen[s], "duplicate %q", s)
		seen[s] = true
	}
	// Callers get their own copy.
	all[0] = "mutated"
	require.Equal(t, StatusCreated, Statuses()[0])
}

func TestStatusValidRejectsNonCanonical(t *testing.T) {
	t.Parallel()
	for _, s := range []Status{"", "Created", "delivered ", "pickuped", "deleted", "new"} {
		require.False(t, s.Valid(), "%q", s)
	}
}

func TestYandexStatusMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw      string
		want     Status
		terminal bool
	}{
		{"new", StatusCreated, false},
		{"estimating", StatusCreated, false},
		{"ready_for_approval", StatusCreated, false},
		{"accepted", StatusCreated, false},
		{"pay_waiting", StatusCreated, false},
		{"estimating_failed", StatusFailed, true},
		{"performer_lookup", StatusCourierSearch, false},
		{"performer_draft", StatusCourierSearch, false},
		{"performer_found", StatusCourierAssigned, false},
		{"performer_not_found", StatusFailed, true},
		{"pickup_arrived", StatusCourierAtPickup, false},
		{"ready_for_pickup_confirmation", StatusCourierAtPickup, false},
		{"pickuped", StatusPickedUp, false},
		{"delivery_arrived", StatusCourierAtDropoff, false},
		{"ready_for_delivery_confirmation", StatusCourierAtDropoff, false},
		{"delivered", StatusDelivered, false},
		{"delivered_finish", StatusDelivered, true},
		{"returning", StatusReturning, false},
		{"return_arrived", StatusReturning, false},
		{"ready_for_return_confirmation", StatusReturning, false},
		{"returned", StatusReturned, false},
		{"returned_finish", StatusReturned, true},
		{"failed", StatusFailed, true},
		{"cancelled", StatusCancelled, true},
		{"cancelled_with_payment", StatusCancelled, true},
		{"cancelled_by_taxi", StatusCancelled, true},
		{"cancelled_with_items_on_hands", StatusCancelled, true},
		{"", StatusUnknown, false},
		{"NEW", StatusUnknown, false},
		{" new", StatusUnknown, false},
		{"delivered_finish_v2", StatusUnknown, false},
		{"performer_canceled", StatusUnknown, false},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			t.Parallel()
			got, terminal := YandexStatus(tt.raw)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.terminal, terminal)
		})
	}
}

func TestYandexStatusCoversTheDocumentedEnum(t *testing.T) {
	t.Parallel()
	var terminal []string
	for _, raw := range yandexDocStatuses() {
		s, term := YandexStatus(raw)
		require.NotEqual(t, StatusUnknown, s, "documented status %q is unmapped", raw)
		require.True(t, s.Valid(), "%q maps to non-canonical %q", raw, s)
		if term {
			terminal = append(terminal, raw)
		}
	}
	// Terminal means "nothing follows": delivered and returned are followed
	// by their _finish statuses, so only these end a claim.
	require.ElementsMatch(t, []string{
		"estimating_failed", "performer_not_found", "delivered_finish", "returned_finish",
		"failed", "cancelled", "cancelled_with_payment", "cancelled_by_taxi",
		"cancelled_with_items_on_hands",
	}, terminal)
}

func TestBTSStatusMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code     int
		want     Status
		terminal bool
	}{
		{0, StatusCancelled, true},
		{100, StatusCreated, false},
		{200, StatusPickedUp, false},
		{300, StatusInTransit, false},
		{400, StatusInTransit, false},
		{500, StatusInTransit, false},
		{600, StatusInTransit, false},
		{700, StatusInTransit, false},
		{800, StatusAtDeliveryOffice, false},
		{900, StatusUnknown, false},
		{1000, StatusUnknown, false},
		{1100, StatusOutForDelivery, false},
		{1200, StatusDelivered, true},
		{1300, StatusCancelled, true},
		{1400, StatusExpired, true},
		{1500, StatusUnknown, false},
		{150, StatusUnknown, false},
		{-100, StatusUnknown, false},
	}
	for _, tt := range tests {
		got, terminal := BTSStatus(tt.code)
		require.Equal(t, tt.want, got, "code %d", tt.code)
		require.Equal(t, tt.terminal, terminal, "code %d", tt.code)
	}
}
